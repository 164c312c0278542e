"""Screenshots of the console's main pages into docs/: `PYTHONPATH=. .venv/bin/python docs/make_screenshots.py`.

Plays the story's UI steps against a real `cedarkey serve` and moto's STS in Debian's chromium."""

import tempfile
from pathlib import Path

from tests.support.browser import chromium, play_story_ui, sign_in
from tests.support.moto import start_moto
from tests.support.server import start_initialized

OUT = Path(__file__).resolve().parent / "screenshots"
OUT.mkdir(exist_ok=True)

d = Path(tempfile.mkdtemp())
with start_moto() as moto:
    proc, admin = start_initialized(d / "data", "--allowed-sts-url", moto.url)
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 800})

            def shot(name: str) -> None:
                page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)

            msgs = []
            page.on("console", lambda m: msgs.append(m.text))
            page.on("pageerror", lambda e: msgs.append("PAGEERROR " + str(e)))
            try:
                sign_in(page, proc.url, admin["access_id"], admin["access_key"], shot)
                play_story_ui(page, moto.url, shot)
                page.get_by_role("button", name="Reveal value").click()
                page.locator("#secret-value").wait_for()
                shot("secret")
                page.get_by_role("link", name="Items", exact=True).click()
                page.get_by_role("heading", name="Items").wait_for()
                shot("items")
                page.get_by_role("link", name="Audit").click()
                page.get_by_role("heading", name="Audit").wait_for()
                shot("audit")
                page.get_by_role("link", name="Who can").click()
                page.get_by_label("Path").first.fill("/dev/db-password")
                page.get_by_role("button", name="Ask").click()
                page.get_by_text("route(s) grant").wait_for()
                page.locator("#can-path").fill("/dev/db-password")
                page.get_by_role("button", name="Decide").click()
                page.get_by_text("Policies that decided").wait_for()
                shot("who-can")
                page.set_viewport_size({"width": 390, "height": 800})
                page.get_by_role("link", name="Access Roles", exact=True).click()
                page.get_by_role("heading", name="Access Roles").wait_for()
                shot("narrow-access-roles")
                print("page messages:", msgs)
            except Exception:
                print("MAIN:", page.locator("main").inner_text()[:2000])
                print("page messages:", msgs)
                raise
    finally:
        proc.stop()
