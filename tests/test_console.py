"""The web console in a real browser (Debian's chromium via Playwright), against `cedarkey serve` and moto's
STS: the story's UI steps, then the machine's CLI read and the story's 401 after its role changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import chromium, play_story_ui, require_chromium, sign_in
from tests.support.moto import MotoHandle
from tests.support.server import ServerProcess, cli, cli_ok, start_initialized, user_env
from tests.test_story_e2e import STORY_401


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, moto: MotoHandle) -> Iterator[tuple[ServerProcess, dict]]:
    proc, admin = start_initialized(tmp_path_factory.mktemp("data"), "--allowed-sts-url", moto.url)
    try:
        yield proc, admin
    finally:
        proc.stop()


@pytest.fixture()
def browser() -> Iterator[Any]:
    require_chromium()
    with chromium() as b:
        yield b


def test_the_story_through_the_console(
    browser: Any, server: tuple[ServerProcess, dict], moto: MotoHandle, aws: dict, tmp_path: Path
) -> None:
    proc, admin = server
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sign_in(page, proc.url, admin["access_id"], admin["access_key"])
    access_id = play_story_ui(page, moto.url)
    assert access_id.startswith("p-")
    assert not page.locator("#secret-value").is_visible()
    page.get_by_role("button", name="Reveal value").click()
    page.get_by_role("button", name="Hide value").wait_for()
    assert page.locator("#secret-value").inner_text() == "s3cr3t"
    storage = page.evaluate("() => JSON.stringify([localStorage, sessionStorage])")
    assert admin["access_key"] not in storage and "t-" not in storage
    cookies = page.context.cookies()
    assert all(admin["access_key"] not in c["value"] for c in cookies)
    assert [(c["httpOnly"], c["sameSite"], c["path"]) for c in cookies] == [(True, "Strict", "/ui")]

    machine = user_env(tmp_path / "machine", aws["dev_role"])
    cli_ok(machine, "configure", "--access-id", access_id, "--access-type", "aws_iam", "--gateway-url", proc.url)
    assert cli_ok(machine, "get-secret-value", "--name", "/dev/db-password").strip() == "s3cr3t"
    other = user_env(tmp_path / "machine", aws["other_role"])
    for cached in (tmp_path / "machine" / ".tmp_creds").iterdir():
        cached.unlink()
    refused = cli(other, "get-secret-value", "--name", "/dev/db-password")
    assert refused.returncode != 0 and refused.stderr.strip().splitlines()[-4:] == STORY_401


def test_names_and_values_render_as_text(browser: Any, server: tuple[ServerProcess, dict]) -> None:
    proc, admin = server
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, proc.url, admin["access_id"], admin["access_key"])
    evil = "<img src=x onerror=alert(1)><script>alert(2)</script>"
    page.goto(proc.url + "/ui/#/items/new")
    page.get_by_label("Name", exact=True).fill("/xss/" + evil.replace("/", "_"))
    page.get_by_label("Value").fill(evil)
    page.get_by_role("button", name="Save").click()
    page.get_by_role("button", name="Reveal value").click()
    page.get_by_role("button", name="Hide value").wait_for()
    assert page.locator("#secret-value").inner_text() == evil
    assert page.locator("main img[src=x], main script").count() == 0 and dialogs == []


def test_sign_out_revokes_the_token(browser: Any, server: tuple[ServerProcess, dict]) -> None:
    proc, admin = server
    page = browser.new_page()
    sign_in(page, proc.url, admin["access_id"], admin["access_key"])
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "cedarkey_console")
    page.get_by_role("button", name="Sign out").click()
    page.get_by_text("Signed out: your token was revoked.").wait_for()
    answer = httpx.post(f"{proc.url}/list-roles", json={"token": token}, timeout=10)
    assert answer.status_code == 401 and answer.json()["error"] == "AuthenticationFailed"


def test_a_non_admin_sees_only_what_it_may_list(browser: Any, server: tuple[ServerProcess, dict]) -> None:
    proc, admin = server
    token = httpx.post(
        f"{proc.url}/auth",
        json={"access-type": "access_key", "access-id": admin["access_id"], "access-key": admin["access_key"]},
        timeout=10,
    ).json()["token"]

    def ok(command: str, **body: Any) -> dict:
        answer = httpx.post(f"{proc.url}/{command}", json={"token": token, **body}, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()

    member = ok("create-auth-method", name="/team/viewer")
    ok("create-role", name="/team/viewers")
    ok("create-role", name="/hidden/role")
    ok("assoc-role-am", **{"role-name": "/team/viewers", "am-name": "/team/viewer"})
    ok(
        "set-role-rule",
        **{"role-name": "/team/viewers", "path": "/team/*", "capability": ["list"], "rule-type": "role-rule"},
    )
    page = browser.new_page()
    sign_in(page, proc.url, member["access-id"], member["access-key"])
    page.get_by_role("link", name="Access Roles", exact=True).click()
    page.get_by_role("link", name="/team/viewers").wait_for()
    assert page.get_by_role("link", name="/hidden/role").count() == 0
    assert page.get_by_role("link", name="/admin").count() == 0
    page.get_by_role("button", name="New").click()
    page.get_by_label("Name", exact=True).fill("/team/mine")
    page.get_by_role("button", name="Save").click()
    page.get_by_role("alert").wait_for()
    assert "PermissionDenied" in page.get_by_role("alert").inner_text()


def test_a_cross_site_form_post_is_refused(browser: Any, server: tuple[ServerProcess, dict]) -> None:
    proc, admin = server
    page = browser.new_page()
    sign_in(page, proc.url, admin["access_id"], admin["access_key"])
    # Another origin (localhost vs 127.0.0.1) posts a form at the console's API with the victim's cookie.
    other = proc.url.replace("127.0.0.1", "localhost")
    page.goto(other + "/health")
    page.set_content(
        f'<form method="post" action="{proc.url}/ui/api/create-role" enctype="text/plain">'
        '<input name=\'{"name": "/csrf-made", "x": "\' value=\'"}\'></form>'
    )
    with page.expect_navigation() as landed:
        page.evaluate("() => document.forms[0].submit()")
    assert landed.value.status == 403 and landed.value.json()["error"] == "CrossSiteRequest"
    page.goto(proc.url + "/ui/#/roles")
    page.get_by_role("heading", name="Access Roles").wait_for()
    assert page.get_by_role("link", name="/csrf-made").count() == 0
