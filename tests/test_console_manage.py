"""The console past the story, in a real browser: editing and deleting (after a confirmation), removing an
association or a rule, a secret's versions, the Audit and Who can pages, errors beside their field, a busy
state, the keyboard alone, and a narrow window. Each change made in the page is checked through the API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.browser import chromium, require_chromium, sign_in
from tests.support.moto import MotoHandle
from tests.support.server import ServerProcess, start_initialized


class Admin:
    """The HTTP API as the administrator: what the page did, seen from outside it."""

    def __init__(self, url: str, access_id: str, key: str) -> None:
        self.url = url
        self.login = {"access-type": "access_key", "access-id": access_id, "access-key": key}
        self.token = httpx.post(f"{url}/auth", json=self.login, timeout=10).json()["token"]

    def call(self, command: str, **body: Any) -> httpx.Response:
        return httpx.post(f"{self.url}/{command}", json={"token": self.token, **body}, timeout=10)

    def ok(self, command: str, **body: Any) -> dict[str, Any]:
        answer = self.call(command, **body)
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, moto: MotoHandle) -> Iterator[tuple[ServerProcess, Admin]]:
    proc, admin = start_initialized(tmp_path_factory.mktemp("data"), "--allowed-sts-url", moto.url)
    try:
        yield proc, Admin(proc.url, admin["access_id"], admin["access_key"])
    finally:
        proc.stop()


@pytest.fixture()
def page(server: tuple[ServerProcess, Admin]) -> Iterator[Any]:
    require_chromium()
    proc, admin = server
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        sign_in(page, proc.url, admin.login["access-id"], admin.login["access-key"])
        yield page


def confirm(page: Any, answer: str) -> None:
    """Answers the console's confirmation dialog with its button named ``answer``."""
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    dialog.get_by_role("button", name=answer, exact=True).click()
    dialog.wait_for(state="hidden")


def test_an_access_key_method_shows_its_key_once_is_edited_and_deleted_after_confirming(
    page: Any, server: tuple[ServerProcess, Admin]
) -> None:
    proc, admin = server
    page.goto(proc.url + "/ui/#/auth-methods/new")
    page.get_by_role("button", name="Access Key").click()
    page.get_by_label("Name", exact=True).fill("/edit/keyed")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("this key is shown once").wait_for()
    key = page.locator("#access-key").inner_text().strip()
    access_id = page.locator("#access-id").inner_text().strip()
    login = {"access-type": "access_key", "access-id": access_id, "access-key": key}
    assert httpx.post(f"{proc.url}/auth", json=login, timeout=10).status_code == 200
    page.reload()
    page.get_by_role("heading", name="/edit/keyed").wait_for()
    assert page.locator("#access-key").count() == 0 and key not in page.content()

    page.get_by_role("link", name="Edit").click()
    page.get_by_label("JWT TTL").fill("600")
    page.get_by_label("Max TTL").fill("1800")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Auth method /edit/keyed saved.").wait_for()
    am = admin.ok("get-auth-method", name="/edit/keyed")
    assert (am["jwt-ttl"], am["max-ttl"]) == (600, 1800)
    assert page.locator("dd", has_text="1800 s").count() == 1

    page.get_by_role("button", name="Delete").click()
    confirm(page, "Cancel")
    assert admin.call("get-auth-method", name="/edit/keyed").status_code == 200
    page.get_by_role("button", name="Delete").click()
    confirm(page, "Delete")
    page.get_by_text("Auth method /edit/keyed deleted.").wait_for()
    assert admin.call("get-auth-method", name="/edit/keyed").status_code == 404
    assert httpx.post(f"{proc.url}/auth", json=login, timeout=10).status_code == 401


def test_errors_show_beside_the_field_that_was_wrong_and_change_nothing(
    page: Any, server: tuple[ServerProcess, Admin]
) -> None:
    proc, admin = server
    admin.ok("create-auth-method", name="/edit/ttl", **{"jwt-ttl": 900})
    page.goto(proc.url + "/ui/#/auth-method/%2Fedit%2Fttl/edit")
    ttl = page.get_by_label("JWT TTL")
    ttl.fill("ten minutes")
    page.get_by_role("button", name="Save").click()
    error = page.locator("#am-jwt-ttl-error")
    error.wait_for()
    assert error.inner_text() == "must be a whole number" and ttl.get_attribute("aria-invalid") == "true"
    ttl.fill("1")  # below the server's minimum: its own message, beside the same field
    page.get_by_role("button", name="Save").click()
    page.locator("#am-jwt-ttl-error", has_text="must be between 60 and").wait_for()
    assert page.evaluate("() => document.activeElement.id") == "am-jwt-ttl"
    assert admin.ok("get-auth-method", name="/edit/ttl")["jwt-ttl"] == 900


def test_a_slow_action_shows_its_busy_state(page: Any, server: tuple[ServerProcess, Admin]) -> None:
    proc, admin = server
    page.goto(proc.url + "/ui/#/roles/new")
    page.get_by_label("Name", exact=True).fill("/edit/busy")
    # Records every state the Save button passes through: the busy one lasts only as long as the request.
    page.evaluate(
        """() => {
            const b = [...document.querySelectorAll("button")].find((x) => x.textContent === "Save");
            window.seen = [];
            new MutationObserver(() => window.seen.push([b.textContent, b.disabled, b.getAttribute("aria-busy")]))
                .observe(b, { attributes: true, childList: true, characterData: true, subtree: true });
        }"""
    )
    page.get_by_role("button", name="Save").click()
    page.get_by_role("heading", name="/edit/busy").wait_for()
    assert ["Saving…", True, "true"] in page.evaluate("() => window.seen")
    assert admin.call("get-role", name="/edit/busy").status_code == 200


def test_a_roles_description_association_and_rules_are_edited_and_removed(
    page: Any, server: tuple[ServerProcess, Admin]
) -> None:
    proc, admin = server
    admin.ok("create-auth-method", name="/edit/member")
    admin.ok("create-role", name="/edit/role", description="old words")
    admin.ok("assoc-role-am", **{"role-name": "/edit/role", "am-name": "/edit/member"})
    for path in ("/edit/a/*", "/edit/b/*"):
        rule = {"role-name": "/edit/role", "path": path, "capability": ["read"], "rule-type": "item-rule"}
        admin.ok("set-role-rule", **rule)
    page.goto(proc.url + "/ui/#/role/%2Fedit%2Frole")
    page.get_by_role("button", name="Edit description").click()
    page.get_by_label("Description").fill("<b>new</b> words")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Description saved.").wait_for()
    assert page.locator("p.description").inner_text() == "<b>new</b> words"
    assert admin.ok("get-role", name="/edit/role")["description"] == "<b>new</b> words"

    rules = page.get_by_role("region", name="Rules")
    rules.get_by_role("row", name="/edit/a/*").get_by_role("button", name="Remove").click()
    confirm(page, "Remove")
    page.get_by_text("Rule removed.").wait_for()
    assert [r["path"] for r in admin.ok("get-role", name="/edit/role")["rules"]] == ["/edit/b/*"]

    page.get_by_role("region", name="Associations").get_by_role("button", name="Remove").click()
    confirm(page, "Cancel")
    assert len(admin.ok("get-role", name="/edit/role")["associations"]) == 1
    page.get_by_role("region", name="Associations").get_by_role("button", name="Remove").click()
    confirm(page, "Remove")
    page.get_by_text("Association removed.").wait_for()
    assert admin.ok("get-role", name="/edit/role")["associations"] == []
    page.get_by_text("Not associated with any auth method.").wait_for()

    page.get_by_role("button", name="Delete").click()
    confirm(page, "Delete")
    page.get_by_text("Access role /edit/role deleted.").wait_for()
    assert admin.call("get-role", name="/edit/role").status_code == 404
    assert page.get_by_role("link", name="/edit/role").count() == 0


def updating(page: Any, server: tuple[ServerProcess, Admin], name: str, value: str) -> Admin:
    """A new secret ``name`` of ``value``, its page open at the Update value form."""
    proc, admin = server
    admin.ok("create-secret", name=name, value=value)
    page.goto(proc.url + "/ui/#/item/" + name.replace("/", "%2F"))
    page.get_by_role("button", name="Update value").click()
    return admin


def test_a_secrets_value_is_updated_kept_rolled_back_and_deleted(
    page: Any, server: tuple[ServerProcess, Admin]
) -> None:
    admin = updating(page, server, "/edit/secret", "first")
    page.get_by_label("New value").fill("second")
    assert page.get_by_label("Keep the previous version").is_checked()
    page.get_by_role("button", name="Save").click()
    page.get_by_text("New value saved as version 2.").wait_for()
    assert admin.ok("get-secret-value", name="/edit/secret", version=1)["value"] == "first"
    versions = page.get_by_role("region", name="Versions")
    assert versions.get_by_role("row").count() == 3  # the header, 2 and 1

    page.get_by_role("button", name="Roll back to 1").click()
    confirm(page, "Roll back")
    page.get_by_text("Version 1 is now version 3.").wait_for()
    page.get_by_role("button", name="Reveal value").click()
    page.get_by_role("button", name="Hide value").wait_for()
    assert page.locator("#secret-value").inner_text() == "first"

    page.get_by_role("button", name="Update value").click()
    page.get_by_label("New value").fill("overwrites")
    page.get_by_label("Keep the previous version").uncheck()
    page.get_by_role("button", name="Save").click()
    page.get_by_text("New value saved as version").wait_for()
    described = admin.ok("describe-item", name="/edit/secret")
    assert admin.ok("get-secret-value", name="/edit/secret")["value"] == "overwrites"
    assert 3 not in [v["version"] for v in described["versions"]]

    page.get_by_role("button", name="Delete").click()
    confirm(page, "Delete")
    page.get_by_text("Secret /edit/secret deleted.").wait_for()
    assert admin.call("describe-item", name="/edit/secret").status_code == 404


def test_an_update_over_someone_elses_is_refused_with_the_version_conflict(
    page: Any, server: tuple[ServerProcess, Admin]
) -> None:
    admin = updating(page, server, "/edit/raced", "one")
    admin.ok("update-secret-val", name="/edit/raced", value="theirs", **{"keep-prev-version": "true"})
    page.get_by_label("New value").fill("mine")
    page.get_by_role("button", name="Save").click()
    page.get_by_role("alert").wait_for()
    assert "VersionConflict" in page.get_by_role("alert").inner_text()
    assert admin.ok("get-secret-value", name="/edit/raced")["value"] == "theirs"


def test_the_audit_page_lists_what_was_done_and_never_a_value(page: Any, server: tuple[ServerProcess, Admin]) -> None:
    admin = server[1]
    admin.ok("create-secret", name="/edit/audited", value="audit-never-shows-this")
    admin.ok("get-secret-value", name="/edit/audited")
    page.get_by_role("link", name="Audit", exact=True).click()
    page.get_by_role("heading", name="Audit").wait_for()
    rows = page.get_by_role("row").filter(has_text="/edit/audited")
    events = [rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())]
    assert events[:2] == ["get-secret-value", "create-secret"]  # newest first
    assert "audit-never-shows-this" not in page.content()


def test_who_can_answers_the_three_questions_with_the_policies_that_decided(
    page: Any, server: tuple[ServerProcess, Admin], moto: MotoHandle
) -> None:
    admin = server[1]
    admin.ok(
        "create-auth-method-aws-iam",
        name="iamAuth1",
        **{"bound-aws-account-id": ["123456789012"], "bound-role-name": ["dev-role"], "sts-url": moto.url},
    )
    admin.ok("create-role", name="dev-readers")
    admin.ok("assoc-role-am", **{"role-name": "dev-readers", "am-name": "iamAuth1"})
    admin.ok(
        "set-role-rule",
        **{"role-name": "dev-readers", "path": "/dev/*", "capability": ["read", "list"], "rule-type": "item-rule"},
    )
    page.get_by_role("link", name="Who can", exact=True).click()
    page.locator("#who-path").fill("/dev/db-password")
    page.get_by_role("button", name="Ask").click()
    route = page.get_by_role("row").filter(has_text="/dev-readers")
    route.wait_for()
    assert "/iamAuth1" in route.inner_text() and "/dev/* (read, list)" in route.inner_text()

    page.locator("#can-path").fill("/dev/db-password")
    page.get_by_role("button", name="Decide").click()
    page.locator(".decision.allow").wait_for()
    page.locator("#can-path").fill("/prod/db-password")
    page.get_by_role("button", name="Decide").click()
    page.locator(".decision.deny").wait_for()

    page.locator("#explain-path").fill("/dev/db-password")
    page.get_by_role("button", name="Explain").click()
    page.locator("#main .answer").last.locator(".decision.allow").wait_for()
    decided = page.locator("#main .answer").last.get_by_role("row")
    assert decided.count() >= 2  # the header and at least the policy that permitted it


def test_the_console_works_from_the_keyboard_alone(server: tuple[ServerProcess, Admin]) -> None:
    require_chromium()
    proc, admin = server
    with chromium() as browser:
        page = browser.new_page()
        page.goto(proc.url + "/")
        page.get_by_label("Access ID").wait_for()
        assert page.evaluate("() => document.activeElement.id") == "signin-access-id"
        page.keyboard.type(admin.login["access-id"])
        page.keyboard.press("Tab")
        page.keyboard.type(admin.login["access-key"])
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="Auth Methods").wait_for()

        def tab_to(text: str) -> None:
            for _ in range(30):
                page.keyboard.press("Tab")
                if page.evaluate("() => document.activeElement.textContent.trim()") == text:
                    return
            raise AssertionError(f"Tab never reached {text!r}")

        tab_to("Access Roles")
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="Access Roles").wait_for()
        tab_to("New")
        page.keyboard.press("Enter")
        page.get_by_label("Name", exact=True).wait_for()
        page.keyboard.press("Tab")  # the Name field follows the page's heading
        page.keyboard.type("/edit/typed")
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="/edit/typed").wait_for()
        tab_to("Delete")
        page.keyboard.press("Enter")
        assert page.evaluate("() => document.activeElement.textContent") == "Cancel"  # the safe answer first
        page.keyboard.press("Escape")
        page.get_by_role("dialog").wait_for(state="hidden")
    assert admin.call("get-role", name="/edit/typed").status_code == 200


@pytest.mark.parametrize("width", [1280, 390])
def test_every_page_fits_its_window(server: tuple[ServerProcess, Admin], width: int) -> None:
    require_chromium()
    proc, admin = server
    admin.call("create-role", name="/edit/a-rather-long-role-name-that-has-to-wrap-somewhere-on-a-phone")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": width, "height": 800})
        sign_in(page, proc.url, admin.login["access-id"], admin.login["access-key"])
        for hash_, heading in [("#/auth-methods", "Auth Methods"), ("#/roles", "Access Roles"), ("#/items", "Items")]:
            page.goto(f"{proc.url}/ui/{hash_}")
            page.get_by_role("heading", name=heading).wait_for()
            wide = page.evaluate("() => document.documentElement.scrollWidth")
            assert wide <= width, f"{hash_} is {wide}px wide in a {width}px window"
            for name in ("Auth Methods", "Access Roles", "Items", "Audit", "Who can"):
                box = page.get_by_role("link", name=name, exact=True).bounding_box()
                assert box and box["x"] >= 0 and box["x"] + box["width"] <= width
