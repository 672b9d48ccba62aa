"""Items of a sale, derived from the sale's seed: ids, names and SVG images.

Nothing here is stored that could not be derived again, so an image can be re-rendered at any
time and /sale/items lists the sale without touching a store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from html import escape

from flashsale.domain import Sale

_ADJECTIVES = (
    "Amber",
    "Brisk",
    "Cobalt",
    "Dapper",
    "Ember",
    "Frosty",
    "Gilded",
    "Hazel",
    "Ivory",
    "Jade",
    "Kinetic",
    "Lunar",
    "Mellow",
    "Nimble",
    "Onyx",
    "Plush",
    "Quartz",
    "Rustic",
    "Solar",
    "Tidal",
    "Umber",
    "Velvet",
    "Woven",
    "Zesty",
)
_NOUNS = (
    "Lantern",
    "Kettle",
    "Backpack",
    "Compass",
    "Teapot",
    "Notebook",
    "Sneaker",
    "Umbrella",
    "Headset",
    "Blanket",
    "Camera",
    "Skillet",
    "Scarf",
    "Speaker",
    "Thermos",
    "Watch",
    "Wallet",
    "Candle",
    "Mug",
    "Drone",
)


def _digest(seed: str, item_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{item_id}".encode()).digest()


def item_id_at(position: int) -> str:
    """Items are numbered 1..N; the id is the number as text."""
    return str(position)


def item_name(seed: str, item_id: str) -> str:
    digest = _digest(seed, item_id)
    adjective = _ADJECTIVES[digest[0] % len(_ADJECTIVES)]
    noun = _NOUNS[digest[1] % len(_NOUNS)]
    return f"{adjective} {noun} #{item_id}"


def image_path(sale_id: str, item_id: str) -> str:
    """Served by this service; stored as a path so it holds behind any host name."""
    return f"/images/{sale_id}/{item_id}.svg"


def items_of(
    sale: Sale, start: int = 1, stop: int | None = None
) -> Iterator[tuple[str, int, str, str]]:
    """(item_id, position, name, image_path) for positions start..stop-1 (default: all)."""
    end = sale.total_items + 1 if stop is None else min(stop, sale.total_items + 1)
    for position in range(start, end):
        item_id = item_id_at(position)
        yield item_id, position, item_name(sale.seed, item_id), image_path(sale.sale_id, item_id)


def render_svg(seed: str, item_id: str) -> str:
    """A small deterministic picture: two colours and a shape picked by the item's digest."""
    d = _digest(seed, item_id)
    hue, accent = d[2] * 360 // 256, d[3] * 360 // 256
    shape = d[4] % 3
    figure = (
        '<circle cx="64" cy="64" r="36"/>',
        '<rect x="30" y="30" width="68" height="68" rx="10"/>',
        '<polygon points="64,22 106,100 22,100"/>',
    )[shape]
    label = escape(item_name(seed, item_id))
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="128" height="128" viewBox="0 0 128 128">'
        f"<title>{label}</title>"
        f'<rect width="128" height="128" fill="hsl({hue},70%,85%)"/>'
        f'<g fill="hsl({accent},65%,45%)">{figure}</g>'
        f'<text x="64" y="122" font-family="sans-serif" font-size="11" text-anchor="middle">'
        f"#{escape(item_id)}</text></svg>"
    )
