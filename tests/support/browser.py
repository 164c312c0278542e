"""Headless Chromium for the console's tests and screenshots: Debian's ``chromium``, driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "apt-get install -y chromium"
#: Takes a screenshot named so (docs/make_screenshots.py); the tests pass none.
Shot = Callable[[str], None]
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    """Skips a browser test where no Chromium is installed, except under CI, where that is a failure."""
    if CHROMIUM.exists():
        return
    message = f"no Chromium at {CHROMIUM}: install it with `{INSTALL}` (as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def chromium() -> Iterator[Any]:
    """A Playwright ``Browser`` on Debian's Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page: Any, url: str, access_id: str, key: str, shot: Shot | None = None) -> None:
    page.goto(url + "/")
    page.get_by_label("Access ID").fill(access_id)
    page.get_by_label("Access Key").fill(key)
    if shot:
        shot("sign-in")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Auth Methods").wait_for()


def play_story_ui(page: Any, sts_url: str, shot: Shot | None = None) -> str:
    """The story's UI steps on a signed-in page: iamAuth1 (account 123456789012, role dev-role), the role
    dev-readers associated with it, ``/dev/*`` read+list, the secret ``/dev/db-password``. The access id."""
    snap = shot or (lambda name: None)
    page.get_by_role("link", name="Auth Methods", exact=True).click()
    page.get_by_role("button", name="New").click()
    page.get_by_role("button", name="AWS IAM").click()
    page.get_by_label("Name", exact=True).fill("iamAuth1")
    page.get_by_label("Bound AWS Account ID").fill("123456789012")
    page.get_by_label("Bound Role Name").fill("dev-role")
    page.get_by_label("STS URL").fill(sts_url)
    snap("new-aws-iam-auth-method")
    page.get_by_role("button", name="Save").click()
    access_id = page.locator("#access-id").inner_text().strip()
    snap("auth-method")
    page.get_by_role("link", name="Access Roles", exact=True).click()
    page.get_by_role("button", name="New").click()
    page.get_by_label("Name", exact=True).fill("dev-readers")
    page.get_by_role("button", name="Save").click()
    page.get_by_role("heading", name="/dev-readers").wait_for()
    page.get_by_role("button", name="Associate").click()
    page.get_by_label("Auth method").select_option("/iamAuth1")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Associated with /iamAuth1.").wait_for()
    page.get_by_role("button", name="Add permission").click()
    page.get_by_label("Rule type").select_option(label="Secrets & Keys")
    page.get_by_label("Path").fill("/dev/*")
    page.get_by_label("read", exact=True).check()
    page.get_by_label("list", exact=True).check()
    page.get_by_role("button", name="Add", exact=True).click()
    page.get_by_text("Permission on /dev/* added.").wait_for()
    snap("access-role")
    page.get_by_role("link", name="Items", exact=True).click()
    page.get_by_role("button", name="New secret").click()
    page.get_by_label("Name", exact=True).fill("/dev/db-password")
    page.get_by_label("Value").fill("s3cr3t")
    page.get_by_role("button", name="Save").click()
    page.get_by_role("heading", name="/dev/db-password").wait_for()
    return access_id
