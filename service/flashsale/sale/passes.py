"""Waiting-room passes: what an admitted user shows at checkout (X-Flashsale-Pass).

A pass is `<expiry ms>.<HMAC-SHA256 of sale, user and expiry>` under FLASHSALE_PASS_KEY, so any
pod checks it with the key alone, without a store round-trip: it is valid for one user, one
sale, until its expiry. Nothing about it is secret but the key; it cannot be revoked before it
expires (it never outlives its sale).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

_PASS = re.compile(r"(\d{1,15})\.([A-Za-z0-9_-]{43})")


def _mac(key: bytes, sale_id: str, user_id: str, expires_ms: int) -> str:
    message = f"{sale_id}\n{user_id}\n{expires_ms}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue(key: bytes, sale_id: str, user_id: str, expires_ms: int) -> str:
    return f"{expires_ms}.{_mac(key, sale_id, user_id, expires_ms)}"


def admits(key: bytes, text: str | None, sale_id: str, user_id: str, now_ms: int) -> bool:
    """Whether `text` is an unexpired pass for this user and sale."""
    match = _PASS.fullmatch(text or "")
    if match is None:
        return False
    expires_ms = int(match[1])
    if now_ms >= expires_ms:
        return False
    return hmac.compare_digest(match[2], _mac(key, sale_id, user_id, expires_ms))
