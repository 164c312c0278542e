"""The rule-file parser: TOML rule files and Cedar files in, a :class:`~cedarkey.policies.rule_set.RuleSet` out.

Pure: it takes file *texts* (``{relative file name: text}``) and gives model objects that remember the file and
line they came from; reading a directory is :mod:`cedarkey.policies.loader`'s job. ``policies/README.md`` is the
reference of the format; in short::

    [auth_method.iamAuth1]                    # an aws_iam auth method (files hold no secret)
    bound_aws_account_id = ["123456789012"]
    bound_role_name = ["dev-role"]

    [auth_method.admin]                       # names an access_key method the server holds (never changed)
    type = "access_key"

    [role.dev-readers]
    description = "reads the dev folder"

    [[role.dev-readers.association]]
    auth_method = "iamAuth1"
    sub_claims = { role_name = "dev-*" }      # optional

    [[role.dev-readers.rule]]
    path = "/dev/*"
    capabilities = ["read", "list"]
    rule_type = "item-rule"                   # optional (item-rule)

    [[test]]
    identity = { auth_method = "iamAuth1", account = "123456789012", role_name = "dev-role" }
    path = "/dev/db-password"
    capability = "read"
    expect = "allow"

Field names may be written with ``_`` or ``-``. ``*.cedar`` files beside them are the engine's author policies.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from cedarkey.engine import (
    ACCESS_KEY,
    ADMIN,
    AWS_IAM,
    AuthMethod,
    Capability,
    ModelError,
    RoleRule,
    RuleType,
    canonical_path,
    canonical_pattern,
    cedar,
    parse_capability,
    parse_rule_type,
    parse_sub_claims,
)
from cedarkey.engine.access_role import SubClaims
from cedarkey.engine.capability import parse_rule_capabilities

from .cedar_files import check_cedar
from .diagnostics import Diagnostic, Source
from .lint import cross_check
from .rule_set import AssociationDef, AuthMethodDef, RoleDef, RuleDef, RuleSet, TestCase
from .schema import schema_text as packaged_schema
from .state import AM_FIELDS, AM_LIST_FIELDS, offline_access_id
from .toml_lines import Key, TomlLines

T = TypeVar("T")


def _norm(key: str) -> str:
    return key.replace("_", "-")


class _Parser:
    def __init__(self, out: RuleSet) -> None:
        self.out = out
        self.file = ""
        self.lines: TomlLines | None = None

    def src(self, key: Key) -> Source:
        return Source(self.file, self.lines.line(key) if self.lines else 1)

    def error(self, key: Key, message: str) -> None:
        s = self.src(key)
        self.out.diagnostics.append(Diagnostic(s.file, s.line, message))

    def warn_at(self, src: Source, message: str) -> None:
        self.out.diagnostics.append(Diagnostic(src.file, src.line, message, "warning"))

    def fields(self, table: dict[str, Any], key: Key, allowed: tuple[str, ...], what: str) -> dict[str, str]:
        """Normalized field name -> the raw key it was written with; unknown and doubled fields are errors."""
        found: dict[str, str] = {}
        for raw in table:
            name = _norm(raw)
            if name not in allowed:
                names = ", ".join(a.replace("-", "_") for a in allowed)
                self.error((*key, raw), f"{what}: {raw}: unknown field; one of {names}")
            elif name in found:
                self.error((*key, raw), f"{what}: {raw}: given twice (as {found[name]!r} too)")
            else:
                found[name] = raw
        return found

    # --- one TOML file ---------------------------------------------------------------------------------

    def toml(self, name: str, text: str) -> None:
        self.file = name
        self.lines = None
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"\(at line (\d+)", str(exc))
            self.out.diagnostics.append(Diagnostic(name, int(m.group(1)) if m else 1, f"invalid TOML: {exc}"))
            return
        self.lines = TomlLines(text)
        top = self.fields(doc, (), ("auth-method", "role", "test", "identity"), "file")
        sections = {n: doc[raw] for n, raw in top.items()}
        raw_of = top
        for kind in ("auth-method", "role", "identity"):
            section = sections.get(kind)
            if section is None:
                continue
            key: Key = (raw_of[kind],)
            if not isinstance(section, dict):
                self.error(key, f"{raw_of[kind]}: must be a table of named tables, e.g. [{raw_of[kind]}.NAME]")
                continue
            for obj_name, table in section.items():
                obj_key = (*key, obj_name)
                if not isinstance(table, dict):
                    self.error(obj_key, f"{kind} {obj_name!r}: must be a table")
                elif kind == "auth-method":
                    self.auth_method(obj_name, table, obj_key)
                elif kind == "role":
                    self.role(obj_name, table, obj_key)
                else:
                    self.identity(obj_name, table, obj_key)
        tests = sections.get("test")
        if tests is not None:
            key = (raw_of["test"],)
            if not isinstance(tests, list):
                self.error(key, "test: must be an array of tables ([[test]])")
            else:
                for n, case in enumerate(tests):
                    self.test(n, case, (*key, n))

    def _field(
        self, key: Key, item: dict[str, Any], raw_key: str, what: str, field: str, parse: Callable[[Any, str], T]
    ) -> T | None:
        """``item[raw_key]`` parsed (None, and an error at its line, when ``parse`` refuses it)."""
        try:
            return parse(item[raw_key], field)
        except ModelError as exc:
            self.error((*key, raw_key), f"{what}: {field}: {exc.message}")
            return None

    def _name(self, kind: str, raw_name: str, key: Key) -> str | None:
        """A table's name in canonical form; None (and an error at ``key``) when it is not a name."""
        try:
            return canonical_path(raw_name, "name")
        except ModelError as exc:
            self.error(key, f"{kind} {raw_name!r}: name: {exc.message}")
            return None

    # --- auth methods ----------------------------------------------------------------------------------

    def auth_method(self, raw_name: str, table: dict[str, Any], key: Key) -> None:
        name = self._name("auth method", raw_name, key)
        if name is None:
            return
        what = f"auth method {name}"
        if name in self.out.auth_methods:
            self.error(key, f"{what}: defined twice (also at {self.out.auth_methods[name].source})")
            return
        found = self.fields(table, key, AM_FIELDS, what)
        am_type = table[found["type"]] if "type" in found else AWS_IAM
        if am_type not in (AWS_IAM, ACCESS_KEY):
            message = f"{what}: type: must be aws_iam (or access_key, to name one the server holds)"
            self.error((*key, found["type"]), message)
            return
        values: dict[str, Any] = {}
        ok = True
        for flag, raw in found.items():
            if flag == "type":
                continue
            value = table[raw]
            if am_type == ACCESS_KEY:
                self.error(
                    (*key, raw),
                    f"{what}: {raw}: an access_key auth method in rule files only names one the server holds "
                    "(it is never created or changed from files): give no other field",
                )
                ok = False
                continue
            if flag in AM_LIST_FIELDS:
                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    self.error((*key, raw), f"{what}: {raw}: must be a string or a list of strings")
                    ok = False
                    continue
                value = tuple(value)
            elif flag in ("access-expires", "jwt-ttl", "max-ttl"):
                if isinstance(value, bool) or not isinstance(value, int):
                    self.error((*key, raw), f"{what}: {raw}: must be an integer")
                    ok = False
                    continue
            elif not isinstance(value, str):
                self.error((*key, raw), f"{what}: {raw}: must be a string")
                ok = False
                continue
            values[flag.replace("-", "_")] = value
        if not ok:
            return
        try:
            am = AuthMethod(name=name, access_id=offline_access_id(name), type=am_type, **values)
        except ModelError as exc:
            raw = found.get(exc.field)
            self.error(key + ((raw,) if raw else ()), f"{what}: {raw or exc.field}: {exc.message}")
            return
        sources = {flag: self.src((*key, raw)) for flag, raw in found.items() if flag != "type"}
        d = AuthMethodDef(am, self.src(key), sources)
        self.out.auth_methods[name] = d
        warning = am.binding_warning()
        if warning:
            self.warn_at(d.source, f"{what}: {warning}")

    # --- roles -----------------------------------------------------------------------------------------

    def role(self, raw_name: str, table: dict[str, Any], key: Key) -> None:
        name = self._name("role", raw_name, key)
        if name is None:
            return
        what = f"role {name}"
        if name == ADMIN:
            self.error(key, f"{what}: the /admin role is the server's own; rule files never define or change it")
            return
        if name in self.out.roles:
            self.error(key, f"{what}: defined twice (also at {self.out.roles[name].source})")
            return
        allowed = ("description", "association", "associations", "rule", "rules")
        found = self.fields(table, key, allowed, what)
        description = table[found["description"]] if "description" in found else ""
        if not isinstance(description, str) or len(description) > 1024:
            message = f"{what}: description: must be a string of at most 1024 characters"
            self.error((*key, found["description"]), message)
            description = ""
        role = RoleDef(name, description, self.src(key))
        for singular, plural in (("association", "associations"), ("rule", "rules")):
            if singular in found and plural in found:
                self.error((*key, found[plural]), f"{what}: give {singular} or {plural}, not both")
                continue
            raw = found.get(singular) or found.get(plural)
            if raw is None:
                continue
            items = table[raw]
            if isinstance(items, dict):
                items = [items]
                item_keys: list[Key] = [(*key, raw)]
            elif isinstance(items, list):
                item_keys = [(*key, raw, n) for n in range(len(items))]
            else:
                self.error((*key, raw), f"{what}: {raw}: must be a table or an array of tables")
                continue
            for n, (item, item_key) in enumerate(zip(items, item_keys, strict=True), start=1):
                if not isinstance(item, dict):
                    self.error(item_key, f"{what}: {singular} {n}: must be a table")
                elif singular == "association":
                    self.association(role, n, item, item_key)
                else:
                    self.rule(role, n, item, item_key)
        self.out.roles[name] = role

    def association(self, role: RoleDef, n: int, item: dict[str, Any], key: Key) -> None:
        what = f"role {role.name}: association {n}"
        found = self.fields(item, key, ("auth-method", "sub-claims"), what)
        if "auth-method" not in found:
            self.error(key, f"{what}: auth_method: required (the name of the auth method)")
            return
        try:
            am_name = canonical_path(item[found["auth-method"]], "auth-method")
        except ModelError as exc:
            self.error((*key, found["auth-method"]), f"{what}: auth_method: {exc.message}")
            return
        sub_claims: SubClaims = ()
        if "sub-claims" in found:
            try:
                sub_claims = parse_sub_claims(item[found["sub-claims"]], "sub_claims")
            except ModelError as exc:
                self.error((*key, found["sub-claims"]), f"{what}: sub_claims: {exc.message}")
                return
            except TypeError:
                self.error((*key, found["sub-claims"]), f"{what}: sub_claims: must be a table or a list")
                return
        role.associations.append(AssociationDef(am_name, sub_claims, self.src(key)))

    def rule(self, role: RoleDef, n: int, item: dict[str, Any], key: Key) -> None:
        what = f"role {role.name}: rule {n}"
        found = self.fields(item, key, ("path", "capabilities", "capability", "rule-type"), what)
        ok = True
        if "path" not in found:
            self.error(key, f"{what}: path: required (a path pattern, e.g. /dev/*)")
            ok = False
        if "capabilities" in found and "capability" in found:
            self.error((*key, found["capability"]), f"{what}: give capabilities or capability, not both")
            ok = False
        cap_raw = found.get("capabilities") or found.get("capability")
        if cap_raw is None:
            self.error(key, f"{what}: capabilities: required (read, create, update, delete, list, or deny)")
            ok = False
        rule_type: RuleType = RuleType.ITEM
        if "rule-type" in found:
            parsed = self._field(key, item, found["rule-type"], what, "rule_type", parse_rule_type)
            ok = ok and parsed is not None
            rule_type = parsed or rule_type
        path = ""
        if "path" in found:
            parsed_path = self._field(key, item, found["path"], what, "path", canonical_pattern)
            ok = ok and parsed_path is not None
            path = parsed_path or path
        capabilities: frozenset[Capability] = frozenset()
        if cap_raw is not None:
            value = item[cap_raw]
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list):
                self.error((*key, cap_raw), f"{what}: {cap_raw}: must be a list of capabilities")
                ok = False
            else:
                for m, v in enumerate(value):
                    try:
                        parse_rule_capabilities([v], cap_raw)
                    except ModelError as exc:
                        self.error((*key, cap_raw, m), f"{what}: {cap_raw}: {exc.message}")
                        ok = False
                if ok:
                    try:
                        capabilities = parse_rule_capabilities(value, cap_raw)
                    except ModelError as exc:
                        self.error((*key, cap_raw), f"{what}: {cap_raw}: {exc.message}")
                        ok = False
        if ok:
            role.rules.append(RuleDef(RoleRule(rule_type, path, capabilities), self.src(key), n))

    # --- identities and tests --------------------------------------------------------------------------

    def identity(self, name: str, table: dict[str, Any], key: Key) -> None:
        if name in self.out.identities:
            self.error(key, f"identity {name!r}: defined twice")
            return
        self.out.identities[name] = {k.replace("-", "_"): v for k, v in table.items()}

    def test(self, n: int, case: object, key: Key) -> None:
        what = f"test {n + 1}"
        if not isinstance(case, dict):
            self.error(key, f"{what}: must be a table")
            return
        allowed = ("name", "identity", "path", "capability", "rule-type", "expect", "expect-login", "now")
        found = self.fields(case, key, allowed, what)
        get = {f: case[raw] for f, raw in found.items()}
        name = get.get("name", f"{self.file}:{self.src(key).line}")
        if not isinstance(name, str):
            self.error((*key, found["name"]), f"{what}: name: must be a string")
            return
        what = f"test {name!r}"
        identity = get.get("identity")
        if isinstance(identity, str):
            identity = {"$ref": identity}
        if not isinstance(identity, dict):
            message = f"{what}: identity: required, a table of attributes or the name of an [identity.NAME]"
            self.error((*key, found.get("identity", "identity")), message)
            return
        identity = {k.replace("-", "_"): v for k, v in identity.items()}
        expect, expect_login = get.get("expect"), get.get("expect-login")
        if expect is None and expect_login is None:
            self.error(key, f'{what}: give expect = "allow" | "deny", or expect_login = true | false')
            return
        if expect is not None and expect not in ("allow", "deny"):
            self.error((*key, found["expect"]), f'{what}: expect: must be "allow" or "deny"')
            return
        if expect_login is not None and not isinstance(expect_login, bool):
            self.error((*key, found["expect-login"]), f"{what}: expect_login: must be true or false")
            return
        if expect is not None and ("path" not in get or "capability" not in get):
            self.error(key, f"{what}: expect needs path and capability")
            return
        for f in ("path", "capability", "rule-type"):
            if f in get and not isinstance(get[f], str):
                self.error((*key, found[f]), f"{what}: {found[f]}: must be a string")
                return
        try:
            if "capability" in get:
                parse_capability(get["capability"])
            if "rule-type" in get:
                parse_rule_type(get["rule-type"])
            if "path" in get:
                canonical_path(get["path"])
        except ModelError as exc:
            raw = found.get(exc.field, exc.field)
            self.error((*key, raw), f"{what}: {exc.field}: {exc.message}")
            return
        now = get.get("now")
        if now is not None and (isinstance(now, bool) or not isinstance(now, int)):
            self.error((*key, found["now"]), f"{what}: now: must be an integer (epoch seconds)")
            return
        self.out.tests.append(
            TestCase(
                name,
                self.src(key),
                identity,
                get.get("path"),
                get.get("capability"),
                get.get("rule-type", "item-rule"),
                expect,
                expect_login,
                now,
            )
        )


def parse_rule_files(files: Mapping[str, str], schema_text: str | None = None) -> RuleSet:
    """Parses a rules directory given as ``{relative name: text}`` (``*.toml`` and ``*.cedar``; other names
    are ignored) and checks it: every problem is a :class:`Diagnostic` of the result, nothing raises."""
    if schema_text is None:
        schema_text = packaged_schema()
    out = RuleSet(schema_text=schema_text)
    parser = _Parser(out)
    schema = cedar.Schema.from_str(schema_text)
    for name in sorted(files):
        if name.endswith(".toml"):
            parser.toml(name, files[name])
        elif name.endswith(".cedar"):
            out.cedar[name] = check_cedar(name, files[name], schema, out.diagnostics)
    cross_check(out)
    return out
