"""The status page at `/`, in a real headless browser against a running `flashsale serve`: it shows
the current sale, the stock figures follow purchases and reservations, the burn-down starts at
the sale's opening (also for what was sold before the page opened), the countdown to the next
sale runs, the items show with their images, marked sold or reserved, and a sold-out sale says
SOLD OUT.

Debian's chromium and chromium-driver (apt) drive it through selenium (the test extra). Without
them the test skips on a developer's machine and FAILS in CI (CI is set), so CI never passes by
not looking (`require` in tests/support/tools.py). STATUS_PAGE_SCREENSHOT=<path> saves a
screenshot of the page at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import requests

from tests.support.processes import flashsale, serving
from tests.support.tools import require

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)
WAIT = 15  # seconds for the page to show a change (it polls every second)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    chromium = require("chromium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        options=options,
        service=Service(shutil.which("chromedriver"), log_output=str(tmp_path / "driver.log")),
    )
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def shows(driver, **expected: str) -> None:
    """Wait until every element id shows its expected text."""
    from selenium.webdriver.support.ui import WebDriverWait

    def matches(d) -> bool:
        return all(text(d, key) == value for key, value in expected.items())

    try:
        WebDriverWait(driver, WAIT, poll_frequency=0.2).until(matches)
    except Exception:
        seen = {key: text(driver, key) for key in expected}
        raise AssertionError(f"page shows {seen}, expected {expected}") from None


def countdown_seconds(value: str) -> int:
    """Seconds shown by "[<days>d ][<h>:]mm:ss"."""
    days, _, value = value.rpartition("d ")
    parts = [int(p) for p in value.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, seconds = parts
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def buy(session: requests.Session, base: str, user: str, item: int, pay: bool = True) -> None:
    checkout = session.post(f"{base}/checkout", params={"user_id": user, "id": str(item)})
    assert checkout.status_code == 200, checkout.text
    if pay:
        purchase = session.post(f"{base}/purchase", params={"code": checkout.json()["code"]})
        assert purchase.status_code == 200, purchase.text


def item_states(driver) -> dict[str, str]:
    """item id -> the state the grid marks it with."""
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#item-list li')]"
        ".map(li => [li.dataset.itemId, li.dataset.state]))"
    )


def burndown(driver) -> dict[str, str]:
    """What the burn-down drew: its first point's time and the sold count of each point."""
    return driver.execute_script("return {...document.getElementById('burndown').dataset}")


def test_status_page_follows_the_sale(browser, service_env: dict[str, str], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    env = {**service_env, "FLASHSALE_USER_LIMIT": "10"}
    flashsale("open-sale", env=env)
    with serving(env, tmp_path, workers=2) as (base, _proc), requests.Session() as session:
        status = session.get(f"{base}/sale/status").json()
        # Sold and reserved before the page opens: the page shows them from the sale's opening.
        for item in (1, 2, 3):
            buy(session, base, "early", item)
        buy(session, base, "early-holder", 4, pay=False)
        browser.get(f"{base}/")
        assert browser.title == "flashsale status"
        shows(
            browser,
            **{
                "sale-id": status["sale_id"],
                "total": "50",
                "sold": "3",
                "reserved": "1",
                "remaining": "47",
                "connection": "live",
            },
        )
        assert not browser.find_element(By.ID, "sold-out").is_displayed()

        # The burn-down starts at the sale's opening with nothing sold, not when the page opened
        # with what was sold by then, and reaches what was sold.
        WebDriverWait(browser, WAIT).until(lambda d: burndown(d).get("from"))
        drawn = burndown(browser)
        assert (drawn["saleId"], drawn["from"]) == (status["sale_id"], status["starts_at"])
        sold_points = json.loads(drawn["sold"])
        assert sold_points[0] == 0 and sold_points[-1] == 3, sold_points
        remaining = browser.find_element(By.ID, "burndown-remaining").get_attribute("points")
        assert len(remaining.split()) == len(sold_points)

        # The countdown runs towards ends_at (the next sale opens when this one ends).
        ends = datetime.fromisoformat(status["ends_at"].replace("Z", "+00:00")).timestamp()
        pattern = re.compile(r"(\d+d )?(\d+:)?\d\d:\d\d")
        WebDriverWait(browser, WAIT).until(lambda d: pattern.fullmatch(text(d, "countdown")))
        first = text(browser, "countdown")
        assert pattern.fullmatch(first), first
        assert abs(countdown_seconds(first) - (ends - time.time())) < 5
        WebDriverWait(browser, WAIT).until(lambda d: text(d, "countdown") != first)

        # The items, with their images actually loaded from the service, marked as they stand.
        WebDriverWait(browser, WAIT).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#item-list li")) == 50
        )
        assert text(browser, "items-count") == "(ALL 50)"  # the heading is in capitals
        WebDriverWait(browser, WAIT).until(lambda d: item_states(d)["4"] == "reserved")
        states = item_states(browser)
        assert [states[str(n)] for n in (1, 2, 3, 4, 5)] == ["sold"] * 3 + ["reserved", "available"]
        assert set(states.values()) == {"sold", "reserved", "available"}
        sold_mark = browser.find_element(By.CSS_SELECTOR, '#item-list li[data-item-id="1"] .state')
        assert sold_mark.text == "SOLD" and sold_mark.is_displayed()
        images = browser.find_elements(By.CSS_SELECTOR, "#item-list img")
        first_item = session.get(f"{base}/sale/items", params={"limit": 1}).json()["items"][0]
        assert images[0].get_attribute("src") == first_item["image_url"]
        assert images[0].get_attribute("alt") == first_item["name"]
        WebDriverWait(browser, WAIT).until(
            lambda d: d.execute_script(
                "return [...document.querySelectorAll('#item-list img')]"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
        )

        # Purchases and reservations move the numbers (in rounds, so the burn-down has a shape).
        sold, reserved = 3, 1
        for round_ in range(3):
            for _ in range(4):
                sold += 1
                buy(session, base, f"buyer{round_}", 2 + sold)
            reserved += 1
            buy(session, base, f"holder{round_}", 40 + reserved, pay=False)
            shows(browser, sold=str(sold), reserved=str(reserved), remaining=str(50 - sold))
        after = session.get(f"{base}/sale/status").json()
        assert (after["items_sold"], after["items_reserved"]) == (sold, reserved)
        # The grid and the burn-down follow.
        WebDriverWait(browser, WAIT).until(lambda d: item_states(d)[str(2 + sold)] == "sold")
        assert item_states(browser)["43"] == "reserved"
        WebDriverWait(browser, WAIT).until(lambda d: json.loads(burndown(d)["sold"])[-1] == sold)
        # The bar follows too: sold is sold/total of its width.
        width = browser.execute_script("return document.getElementById('bar-sold').style.width")
        assert float(width.rstrip("%")) == pytest.approx(100 * sold / 50)

        # Without the waiting room its panel stays hidden.
        WebDriverWait(browser, WAIT).until(
            lambda d: d.find_element(By.ID, "queue").get_attribute("data-checked") == "yes"
        )
        assert not browser.find_element(By.ID, "queue").is_displayed()

        # The page polled the JSON endpoints and met no script error.
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        if os.environ.get("STATUS_PAGE_SCREENSHOT"):
            time.sleep(1.5)
            browser.save_screenshot(os.environ["STATUS_PAGE_SCREENSHOT"])
        assert browser.save_screenshot(str(tmp_path / "status-page.png"))


def test_status_page_joins_the_waiting_room(
    browser, service_env: dict[str, str], tmp_path: Path
) -> None:
    """With the waiting room on, a visitor joins from the page, sees their place, then the pass,
    which checkout takes."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    env = {
        **service_env,
        "FLASHSALE_WAITING_ROOM": "on",
        "FLASHSALE_PASS_KEY": "status-page-pass-key-0123456789",
        "FLASHSALE_ADMIT_RATE": "0.5",  # one every 2 s: the page shows a place before the pass
    }
    flashsale("open-sale", env=env)
    with serving(env, tmp_path, workers=1) as (base, _proc), requests.Session() as session:
        for user in ("ahead1", "ahead2"):
            assert session.post(f"{base}/queue", params={"user_id": user}).status_code == 200
        browser.get(f"{base}/")
        WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.ID, "queue").is_displayed())
        browser.find_element(By.ID, "queue-user").send_keys("visitor")
        browser.find_element(By.ID, "queue-join").click()
        WebDriverWait(browser, WAIT).until(lambda d: text(d, "queue-place").startswith("Position"))
        assert re.match(r"Position [1-3] in the queue of sale ", text(browser, "queue-place"))
        WebDriverWait(browser, WAIT).until(lambda d: text(d, "queue-place").startswith("Admitted"))
        admission_pass = text(browser, "queue-pass")
        checkout = session.post(
            f"{base}/checkout",
            params={"user_id": "visitor", "id": "1"},
            headers={"X-Flashsale-Pass": admission_pass},
        )
        assert checkout.status_code == 200, checkout.text
        refused = session.post(f"{base}/checkout", params={"user_id": "visitor", "id": "2"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_admitted"
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors


def test_status_page_says_sold_out(browser, service_env: dict[str, str], tmp_path: Path) -> None:
    """Every item sold: the page says SOLD OUT, every item is marked sold, and the burn-down
    reaches zero remaining. One item short of it, it does not."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    env = {**service_env, "FLASHSALE_ITEMS": "8", "FLASHSALE_USER_LIMIT": "10"}
    flashsale("open-sale", env=env)
    with serving(env, tmp_path, workers=1) as (base, _proc), requests.Session() as session:
        for item in range(1, 8):
            buy(session, base, "collector", item)
        browser.get(f"{base}/")
        shows(browser, sold="7", remaining="1", connection="live")
        WebDriverWait(browser, WAIT).until(lambda d: item_states(d).get("7") == "sold")
        assert item_states(browser)["8"] == "available"
        assert not browser.find_element(By.ID, "sold-out").is_displayed()

        buy(session, base, "last-buyer", 8)
        shows(browser, sold="8", remaining="0")
        banner = browser.find_element(By.ID, "sold-out")
        WebDriverWait(browser, WAIT).until(lambda d: banner.is_displayed())
        assert banner.text == "SOLD OUT"
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-sold-out") == "yes"
        WebDriverWait(browser, WAIT).until(lambda d: set(item_states(d).values()) == {"sold"})
        WebDriverWait(browser, WAIT).until(lambda d: json.loads(burndown(d)["sold"])[-1] == 8)
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
