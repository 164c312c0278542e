"""Rule files: the access model as TOML files (plus raw Cedar) that policy authors keep under version control.

Pure, like the rest of the engine: every function takes file *texts* (``{relative file name: text}``) and
gives model objects that remember the file and line they came from. Reading a directory is
:mod:`cedarkey.policies.loader`'s job. ``policies/README.md`` is the reference of the format; in short::

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

Also here: the neutral :class:`ModelState` (what files, the server's model and the ``export-model`` /
``apply-model`` JSON all turn into), the :class:`Plan` between two states, TOML output of a state, and the
glob reasoning (:func:`pattern_covers`) behind the "can never take effect" warnings.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import cedar, compile
from .access_role import AccessRole, Association, SubClaims, new_assoc_id, parse_sub_claims
from .auth_method import ACCESS_KEY, AWS_IAM, BINDINGS, DEFAULT_JWT_TTL, DEFAULT_STS_URL, AuthMethod
from .capability import Capability, RuleType, parse_capability, parse_rule_capabilities, parse_rule_type
from .engine import Engine
from .errors import ModelError
from .glob import fresh_char, glob_match, pattern_covers
from .identity import Identity
from .model import ADMIN, Model
from .path import canonical_path, canonical_pattern
from .role_rule import RoleRule

#: The auth method fields a rule file may set, by their API (flag) names.
AM_FIELDS: tuple[str, ...] = (
    "type",
    *(b.flag for b in BINDINGS),
    "bound-ips",
    "access-expires",
    "jwt-ttl",
    "sts-url",
)
_AM_LIST_FIELDS = frozenset({*(b.flag for b in BINDINGS), "bound-ips"})


# --- diagnostics ---------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Source:
    """Where something was written: a file (relative to the rules directory) and a 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, order=True)
class Diagnostic:
    file: str
    line: int
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        tag = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}: {tag}{self.message}"


class RuleFilesError(ModelError):
    """Rule files with errors: ``diagnostics`` lists them all (``FILE:LINE: message``)."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("", "\n".join(str(d) for d in diagnostics))


# --- sub-claims ----------------------------------------------------------------------------------------


def sub_claims_imply(specific: SubClaims, general: SubClaims) -> bool:
    """Whether every identity that satisfies ``specific`` satisfies ``general`` (exact, see pattern_covers)."""
    mine = dict(specific)
    for attr, patterns in general:
        own = mine.get(attr)
        if own is None:  # an identity without the attribute satisfies specific, not general
            return False
        for p in own:
            c = fresh_char(p, *patterns)
            instance = p.replace("*", c)
            if not any(glob_match(g, instance) for g in patterns):
                return False
    return True


# --- where things are in a TOML text ------------------------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9_-]+")
Key = tuple[str | int, ...]


class _TomlLines:
    """The line of every key and array element of a TOML text (tomllib keeps none).

    Keys are paths as tomllib's dicts nest them: ``("role", "dev-readers", "rule", 0, "path")``; an array of
    tables element and an inline array element are both an integer index. Runs only on text tomllib accepted.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.lines: dict[Key, int] = {}
        self._newlines = [m.start() for m in re.finditer("\n", text)]
        self._aot: dict[Key, int] = {}
        try:
            self._document()
        except (IndexError, ValueError, tomllib.TOMLDecodeError):  # pragma: no cover - best effort
            pass

    def line(self, key: Key) -> int:
        """The line of ``key``, else of its nearest recorded ancestor, else 1."""
        for n in range(len(key), 0, -1):
            found = self.lines.get(key[:n])
            if found is not None:
                return found
        return 1

    def _line_at(self, index: int) -> int:
        return bisect.bisect_left(self._newlines, index) + 1

    def _record(self, key: Key, start: int | None = None) -> None:
        """Records ``key`` and its implicit parents (a header or dotted key defines them) at ``start``."""
        line = self._line_at(self.i if start is None else start)
        for n in range(1, len(key) + 1):
            self.lines.setdefault(key[:n], line)

    def _skip(self, newlines: bool) -> None:
        t = self.text
        while self.i < len(t):
            c = t[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            elif c == "#":
                end = t.find("\n", self.i)
                self.i = len(t) if end < 0 else end
            else:
                return

    def _document(self) -> None:
        t = self.text
        header: Key = ()
        while True:
            self._skip(newlines=True)
            if self.i >= len(t):
                return
            if t.startswith("[[", self.i):
                self.i += 2
                start = self.i
                parts = self._key()
                self._skip(False)
                self.i += 2
                header = self._resolve(parts, aot=True)
                self._record(header, start)
            elif t[self.i] == "[":
                self.i += 1
                start = self.i
                parts = self._key()
                self._skip(False)
                self.i += 1
                header = self._resolve(parts, aot=False)
                self._record(header, start)
            else:
                self._record_key_value(header)

    def _resolve(self, parts: list[str], *, aot: bool) -> Key:
        key: Key = ()
        for n, part in enumerate(parts):
            key += (part,)
            if aot and n == len(parts) - 1:
                count = self._aot.get(key, 0)
                self._aot[key] = count + 1
                key += (count,)
            elif key in self._aot:
                key += (self._aot[key] - 1,)
        return key

    def _record_key_value(self, prefix: Key) -> None:
        start = self.i
        parts = self._key()
        key = prefix + tuple(parts)
        self._record(key, start)
        self._skip(False)
        self.i += 1  # '='
        self._skip(False)
        self._value(key)

    def _key(self) -> list[str]:
        t = self.text
        parts: list[str] = []
        while True:
            self._skip(False)
            c = t[self.i]
            if c == '"':
                end = self._basic_end(self.i)
                parts.append(tomllib.loads("k = " + t[self.i : end])["k"])
                self.i = end
            elif c == "'":
                end = t.index("'", self.i + 1) + 1
                parts.append(t[self.i + 1 : end - 1])
                self.i = end
            else:
                m = _BARE.match(t, self.i)
                if m is None:
                    raise ValueError("not a key")
                parts.append(m.group())
                self.i = m.end()
            self._skip(False)
            if self.i < len(t) and t[self.i] == ".":
                self.i += 1
                continue
            return parts

    def _basic_end(self, start: int) -> int:
        """The index after the closing quote of the basic string opening at ``start``."""
        t = self.text
        i = start + 1
        while t[i] != '"':
            i += 2 if t[i] == "\\" else 1
        return i + 1

    def _multiline_end(self, start: int, quote: str) -> int:
        t = self.text
        i = start + 3
        while True:
            if quote == '"' and t[i] == "\\":
                i += 2
                continue
            if t.startswith(quote * 3, i):
                run = 3
                while run < 5 and i + run < len(t) and t[i + run] == quote:
                    run += 1
                return i + run
            i += 1

    def _value(self, key: Key) -> None:
        t = self.text
        c = t[self.i]
        if c == "[":
            self.i += 1
            index = 0
            while True:
                self._skip(True)
                if t[self.i] == "]":
                    self.i += 1
                    return
                if t[self.i] == ",":
                    self.i += 1
                    continue
                self._record((*key, index))
                self._value((*key, index))
                index += 1
        elif c == "{":
            self.i += 1
            while True:
                self._skip(True)
                if t[self.i] == "}":
                    self.i += 1
                    return
                if t[self.i] == ",":
                    self.i += 1
                    continue
                self._record_key_value(key)
        elif t.startswith('"""', self.i) or t.startswith("'''", self.i):
            self.i = self._multiline_end(self.i, c)
        elif c == '"':
            self.i = self._basic_end(self.i)
        elif c == "'":
            self.i = t.index("'", self.i + 1) + 1
        else:
            while self.i < len(t) and t[self.i] not in ",]}\n#":
                self.i += 1


# --- Cedar files ---------------------------------------------------------------------------------------


def cedar_statements(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each top-level statement (policy) of Cedar text: the spans between ``;``."""
    spans: list[tuple[int, int]] = []
    i, n, start = 0, len(text), None
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        if text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if start is None:
            start = i
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
        elif c == ";":
            spans.append((start, i + 1))
            start = None
            i += 1
        else:
            i += 1
    if start is not None:
        spans.append((start, n))
    return spans


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def author_policy_id(source: str, local: str) -> str:
    """The id the engine gives an author policy (see :meth:`Engine.set_author_policies`)."""
    return f"file:{compile.quote(source)}/{local}"


@dataclass
class CedarFile:
    name: str
    text: str
    #: policy id (as the engine names it) -> line of the policy's first token
    lines: dict[str, int] = field(default_factory=dict)


def _check_cedar(name: str, text: str, schema: Any, out: list[Diagnostic]) -> CedarFile:
    spans = cedar_statements(text)
    starts = [_line_of(text, s) for s, _ in spans]
    result = CedarFile(name, text)
    try:
        policies = cedar.to_json(text)
    except ValueError as exc:
        for (s, e), line in zip(spans, starts, strict=True):
            try:
                cedar.to_json(text[s:e])
            except ValueError as inner:
                out.append(Diagnostic(name, line, f"not valid Cedar: {inner}"))
                break
        else:
            out.append(Diagnostic(name, starts[-1] if starts else 1, f"not valid Cedar: {exc}"))
        return result
    compiled: dict[str, dict[str, Any]] = {}
    for n, policy in enumerate(policies.values()):
        line = starts[n] if n < len(starts) else 1
        local = (policy.get("annotations") or {}).get("id") or str(n)
        pid = author_policy_id(name, local)
        if pid in compiled:
            out.append(Diagnostic(name, line, f"duplicate policy id {local!r}"))
            continue
        policy = {**policy, "annotations": {**(policy.get("annotations") or {}), "id": pid}}
        compiled[pid] = policy
        result.lines[pid] = line
    for error in cedar.validate(compiled, schema):
        pid = next((p for p in compiled if error.startswith(p + ": ")), "")
        message = re.sub(r"^for policy `[^`]*`, ", "", error[len(pid) + 2 :] if pid else error)
        out.append(Diagnostic(name, result.lines.get(pid, 1), f"fails the schema: {message.strip()}"))
    return result


# --- the parsed files ----------------------------------------------------------------------------------


@dataclass
class AuthMethodDef:
    auth_method: AuthMethod  # its access id is an offline placeholder (see offline_access_id)
    source: Source
    #: API field name -> where it was set
    fields: dict[str, Source] = field(default_factory=dict)


@dataclass
class AssociationDef:
    am_name: str
    sub_claims: SubClaims
    source: Source


@dataclass
class RuleDef:
    rule: RoleRule
    source: Source
    number: int  # 1-based, in the role


@dataclass
class RoleDef:
    name: str
    description: str
    source: Source
    associations: list[AssociationDef] = field(default_factory=list)
    rules: list[RuleDef] = field(default_factory=list)


@dataclass
class TestCase:
    name: str
    source: Source
    identity: dict[str, Any]
    path: str | None = None
    capability: str | None = None
    rule_type: str = "item-rule"
    expect: str | None = None  # "allow" | "deny"
    expect_login: bool | None = None
    now: int | None = None


def offline_access_id(name: str) -> str:
    """The stable access id an auth method gets offline (engines built from files, tests, exports); the
    server gives each auth method it creates a random one instead."""
    return "p-" + hashlib.sha256(("cedarkey-offline:" + name).encode("utf-8", "surrogatepass")).hexdigest()[:20]


@dataclass
class RuleSet:
    """Everything a rules directory says, with where it says it. ``diagnostics`` holds errors and warnings;
    with any error, :meth:`state` and :meth:`engine` refuse."""

    auth_methods: dict[str, AuthMethodDef] = field(default_factory=dict)
    roles: dict[str, RoleDef] = field(default_factory=dict)
    cedar: dict[str, CedarFile] = field(default_factory=dict)
    tests: list[TestCase] = field(default_factory=list)
    identities: dict[str, dict[str, Any]] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    schema_text: str | None = None

    @property
    def errors(self) -> list[Diagnostic]:
        return sorted(d for d in self.diagnostics if d.severity == "error")

    @property
    def warnings(self) -> list[Diagnostic]:
        return sorted(d for d in self.diagnostics if d.severity == "warning")

    def _require_clean(self) -> None:
        if self.errors:
            raise RuleFilesError(self.errors)

    def state(self) -> ModelState:
        """The model the files describe (auth methods with offline access ids)."""
        self._require_clean()
        state = ModelState(cedar={name: f.text for name, f in self.cedar.items()})
        for name, d in self.auth_methods.items():
            state.auth_methods[name] = d.auth_method
        for name, role in self.roles.items():
            rs = RoleState(name, role.description)
            for a in role.associations:
                rs.associations.setdefault((a.am_name, a.sub_claims), None)
            for r in role.rules:
                rs.rules[r.rule.key] = r.rule
            state.roles[name] = rs
        return state

    def engine(self) -> Engine:
        """An engine serving exactly these files, offline."""
        return build_engine(self.state(), self.schema_text)

    def policy_sources(self) -> dict[str, str]:
        """Compiled policy id -> ``FILE:LINE`` it comes from."""
        out: dict[str, str] = {}
        for name, d in self.auth_methods.items():
            out[compile.auth_method_policy_id(name, "permit")] = str(d.source)
            for flag, src in d.fields.items():
                out[compile.auth_method_policy_id(name, flag)] = str(src)
        for role in self.roles.values():
            for r in role.rules:
                pid = compile.rule_policy_id(role.name, r.rule.rule_type, r.rule.path)
                out[pid] = str(r.source)  # a duplicate's later definition wins, as in the engine
        for f in self.cedar.values():
            for pid, line in f.lines.items():
                out[pid] = f"{f.name}:{line}"
        return out


def _norm(key: str) -> str:
    return key.replace("_", "-")


class _Parser:
    def __init__(self, out: RuleSet) -> None:
        self.out = out
        self.file = ""
        self.lines: _TomlLines | None = None

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
        self.lines = _TomlLines(text)
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

    # --- auth methods ----------------------------------------------------------------------------------

    def auth_method(self, raw_name: str, table: dict[str, Any], key: Key) -> None:
        try:
            name = canonical_path(raw_name, "name")
        except ModelError as exc:
            self.error(key, f"auth method {raw_name!r}: name: {exc.message}")
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
            if flag in _AM_LIST_FIELDS:
                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    self.error((*key, raw), f"{what}: {raw}: must be a string or a list of strings")
                    ok = False
                    continue
                value = tuple(value)
            elif flag in ("access-expires", "jwt-ttl"):
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
        try:
            name = canonical_path(raw_name, "name")
        except ModelError as exc:
            self.error(key, f"role {raw_name!r}: name: {exc.message}")
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
            try:
                rule_type = parse_rule_type(item[found["rule-type"]], "rule_type")
            except ModelError as exc:
                self.error((*key, found["rule-type"]), f"{what}: rule_type: {exc.message}")
                ok = False
        path = ""
        if "path" in found:
            try:
                path = canonical_pattern(item[found["path"]], "path")
            except ModelError as exc:
                self.error((*key, found["path"]), f"{what}: path: {exc.message}")
                ok = False
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
        from cedarkey.policies import schema_text as packaged_schema

        schema_text = packaged_schema()
    out = RuleSet(schema_text=schema_text)
    parser = _Parser(out)
    schema = cedar.Schema.from_str(schema_text)
    for name in sorted(files):
        if name.endswith(".toml"):
            parser.toml(name, files[name])
        elif name.endswith(".cedar"):
            out.cedar[name] = _check_cedar(name, files[name], schema, out.diagnostics)
    _cross_check(out)
    return out


def _cross_check(rs: RuleSet) -> None:
    def error(src: Source, message: str) -> None:
        rs.diagnostics.append(Diagnostic(src.file, src.line, message))

    def warn(src: Source, message: str) -> None:
        rs.diagnostics.append(Diagnostic(src.file, src.line, message, "warning"))

    for role in rs.roles.values():
        kept: list[AssociationDef] = []
        seen: dict[tuple[str, SubClaims], AssociationDef] = {}
        for n, a in enumerate(role.associations, start=1):
            if a.am_name not in rs.auth_methods:
                error(
                    a.source,
                    f"role {role.name}: association {n}: auth_method: unknown auth method {a.am_name} (define it "
                    f"as [auth_method.{_toml_key(a.am_name)}], or name an access_key method of the server with "
                    'type = "access_key")',
                )
                continue
            if (a.am_name, a.sub_claims) in seen:
                first = seen[(a.am_name, a.sub_claims)]
                warn(a.source, f"role {role.name}: association {n}: duplicate of the association at {first.source}")
                continue
            seen[(a.am_name, a.sub_claims)] = a
            kept.append(a)
        role.associations = kept
        by_key: dict[tuple[RuleType, str], RuleDef] = {}
        for r in role.rules:
            earlier = by_key.get(r.rule.key)
            if earlier is not None:
                warn(
                    earlier.source,
                    f"role {role.name}: rule {earlier.number}: duplicate rule ({r.rule.rule_type} on "
                    f"{r.rule.path}): replaced by rule {r.number} at {r.source}, so it never takes effect",
                )
            by_key[r.rule.key] = r
        role.rules = list(by_key.values())
        if role.rules and not role.associations:
            warn(role.source, f"role {role.name}: no association: none of its rules ever takes effect")
    for r_role, r, deny_role, deny in _covered_allows(rs):
        where = "" if deny_role.name == r_role.name else f" of role {deny_role.name}"
        warn(
            r.source,
            f"role {r_role.name}: rule {r.number} ({r.rule.rule_type} on {r.rule.path}) never takes effect: "
            f"the deny on {deny.rule.path}{where} at {deny.source} covers every path it matches, for every "
            "identity that holds it",
        )
    for case in rs.tests:
        ref = case.identity.get("$ref")
        if ref is not None and ref not in rs.identities:
            error(case.source, f"test {case.name!r}: identity: no [identity.{ref}] defined")
        name = case.identity.get("auth_method") if ref is None else rs.identities.get(ref, {}).get("auth_method")
        if isinstance(name, str):
            try:
                path = canonical_path(name, "auth_method")
            except ModelError:
                path = name
            if path not in rs.auth_methods:
                error(case.source, f"test {case.name!r}: identity: auth_method: unknown auth method {name}")


def _covered_allows(rs: RuleSet) -> list[tuple[RoleDef, RuleDef, RoleDef, RuleDef]]:
    """Allow rules that can never take effect: for each association of their role (each way of holding it)
    some deny rule of the same rule type covering the allow's pattern applies to every identity holding the
    role that way: a deny of a role associated with the same auth method whose sub-claims follow from the
    allow's association's. Its own role's denies are the common case."""
    denies: list[tuple[RoleDef, RuleDef, AssociationDef]] = [
        (role, r, a) for role in rs.roles.values() for r in role.rules if r.rule.is_deny for a in role.associations
    ]
    out: list[tuple[RoleDef, RuleDef, RoleDef, RuleDef]] = []
    for role in rs.roles.values():
        if not role.associations:
            continue
        for r in role.rules:
            if r.rule.is_deny:
                continue
            covering: tuple[RoleDef, RuleDef] | None = None
            for assoc in role.associations:
                found = None
                for d_role, d, d_assoc in denies:
                    if (
                        d.rule.rule_type == r.rule.rule_type
                        and d_assoc.am_name == assoc.am_name
                        and sub_claims_imply(assoc.sub_claims, d_assoc.sub_claims)
                        and pattern_covers(d.rule.path, r.rule.path)
                    ):
                        found = (d_role, d)
                        if d_role is role:
                            break
                if found is None:
                    covering = None
                    break
                if covering is None or found[0] is role:
                    covering = found
            if covering is not None:
                out.append((role, r, covering[0], covering[1]))
    return out


# --- model states: files, the server, and the wire -----------------------------------------------------


@dataclass
class RoleState:
    name: str
    description: str = ""
    #: (auth method name, sub-claims) -> association id (None when not known: files)
    associations: dict[tuple[str, SubClaims], str | None] = field(default_factory=dict)
    rules: dict[tuple[RuleType, str], RoleRule] = field(default_factory=dict)


@dataclass
class ModelState:
    """An access model by names: what rule files describe, what a server holds, what ``export-model`` gives
    and ``apply-model`` takes. ``cedar`` is the author policies, ``{file name: Cedar text}``."""

    auth_methods: dict[str, AuthMethod] = field(default_factory=dict)
    roles: dict[str, RoleState] = field(default_factory=dict)
    cedar: dict[str, str] = field(default_factory=dict)


def state_from_model(model: Model, cedar_files: Mapping[str, str] | None = None) -> ModelState:
    """The state of an engine's model (association ids kept)."""
    names = {am.access_id: am.name for am in model.auth_methods.values()}
    state = ModelState(dict(model.auth_methods), cedar=dict(cedar_files or {}))
    for role in model.roles.values():
        rs = RoleState(role.name, role.description)
        for a in role.associations.values():
            rs.associations[(names[a.access_id], a.sub_claims)] = a.assoc_id
        rs.rules = dict(role.rules)
        state.roles[role.name] = rs
    return state


def state_to_json(state: ModelState) -> dict[str, Any]:
    """The ``export-model`` JSON of a state."""
    roles = []
    for name in sorted(state.roles):
        rs = state.roles[name]
        assocs = []
        for (am_name, sub_claims), assoc_id in rs.associations.items():
            entry: dict[str, Any] = {"am-name": am_name, "sub-claims": {k: list(v) for k, v in sub_claims}}
            if assoc_id is not None:
                entry["assoc-id"] = assoc_id
            assocs.append(entry)
        rules = [r.to_dict() for r in sorted(rs.rules.values(), key=lambda r: (r.rule_type, r.path))]
        roles.append({"name": name, "description": rs.description, "associations": assocs, "rules": rules})
    return {
        "auth-methods": [state.auth_methods[n].to_dict() for n in sorted(state.auth_methods)],
        "roles": roles,
        "cedar": dict(sorted(state.cedar.items())),
    }


_JSON_AM_KEYS = frozenset({"name", "access-id", *AM_FIELDS})


def state_from_json(data: object) -> ModelState:
    """A state from ``export-model`` JSON (what ``apply-model`` takes). Access ids may be left out: an auth
    method is known by its name. Raises ModelError naming the bad field (``roles[2].rules[0].path``)."""
    if not isinstance(data, dict):
        raise ModelError("model", "must be a JSON object with auth-methods, roles and cedar")
    unknown = set(data) - {"auth-methods", "roles", "cedar"}
    if unknown:
        raise ModelError("model", f"unknown key {sorted(unknown)[0]!r}")
    state = ModelState()
    for n, raw in enumerate(_list(data.get("auth-methods", []), "auth-methods")):
        where = f"auth-methods[{n}]"
        if not isinstance(raw, dict):
            raise ModelError(where, "must be an object")
        bad = set(raw) - _JSON_AM_KEYS
        if bad:
            raise ModelError(f"{where}.{sorted(bad)[0]}", "unknown field")
        values = {k.replace("-", "_"): tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        values.setdefault("type", AWS_IAM)
        values.setdefault("access_id", offline_access_id(str(values.get("name"))))
        try:
            am = AuthMethod(**values)
        except ModelError as exc:
            raise ModelError(f"{where}.{exc.field}", exc.message) from None
        except TypeError as exc:
            raise ModelError(where, str(exc)) from None
        if am.name in state.auth_methods:
            raise ModelError(f"{where}.name", f"auth method {am.name} given twice")
        state.auth_methods[am.name] = am
    for n, raw in enumerate(_list(data.get("roles", []), "roles")):
        where = f"roles[{n}]"
        if not isinstance(raw, dict):
            raise ModelError(where, "must be an object")
        bad = set(raw) - {"name", "description", "associations", "rules"}
        if bad:
            raise ModelError(f"{where}.{sorted(bad)[0]}", "unknown field")
        try:
            role = AccessRole(raw.get("name"), raw.get("description") or "")  # type: ignore[arg-type]
        except ModelError as exc:
            raise ModelError(f"{where}.{exc.field}", exc.message) from None
        if role.name in state.roles:
            raise ModelError(f"{where}.name", f"role {role.name} given twice")
        rs = RoleState(role.name, role.description)
        for m, a in enumerate(_list(raw.get("associations", []), f"{where}.associations")):
            at = f"{where}.associations[{m}]"
            if not isinstance(a, dict) or set(a) - {"am-name", "sub-claims", "assoc-id"}:
                raise ModelError(at, "must be an object with am-name and sub-claims")
            try:
                am_name = canonical_path(a.get("am-name"), "am-name")
                sub_claims = parse_sub_claims(a.get("sub-claims") or (), "sub-claims")
            except ModelError as exc:
                raise ModelError(f"{at}.{exc.field}", exc.message) from None
            except TypeError:
                raise ModelError(f"{at}.sub-claims", "must map attributes to patterns") from None
            if am_name not in state.auth_methods:
                raise ModelError(f"{at}.am-name", f"{am_name} is not among the model's auth-methods")
            rs.associations.setdefault((am_name, sub_claims), None)
        for m, r in enumerate(_list(raw.get("rules", []), f"{where}.rules")):
            at = f"{where}.rules[{m}]"
            if not isinstance(r, dict) or set(r) - {"rule-type", "path", "capabilities"}:
                raise ModelError(at, "must be an object with rule-type, path and capabilities")
            try:
                rule = RoleRule.parse(r.get("rule-type", "item-rule"), r.get("path"), r.get("capabilities") or [])
            except ModelError as exc:
                raise ModelError(f"{at}.{exc.field}", exc.message) from None
            except TypeError:
                raise ModelError(f"{at}.capabilities", "must be a list of capabilities") from None
            rs.rules[rule.key] = rule
        state.roles[role.name] = rs
    cedar_files = data.get("cedar", {})
    if not isinstance(cedar_files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in cedar_files.items()
    ):
        raise ModelError("cedar", "must be an object of file name to Cedar text")
    state.cedar = dict(cedar_files)
    return state


def _list(value: object, field_name: str) -> list[Any]:
    if not isinstance(value, list):
        raise ModelError(field_name, "must be a list")
    return value


def build_engine(state: ModelState, schema_text: str | None = None) -> Engine:
    """An engine holding ``state`` (associations without an id get a fresh one). Raises ModelError."""
    engine = Engine(schema_text)
    access_ids = {name: am.access_id for name, am in state.auth_methods.items()}
    associations = []
    rules = []
    for rs in state.roles.values():
        for (am_name, sub_claims), assoc_id in rs.associations.items():
            if am_name not in access_ids:
                raise ModelError("am-name", f"role {rs.name}: no auth method {am_name}")
            associations.append(Association(assoc_id or new_assoc_id(), rs.name, access_ids[am_name], sub_claims))
        rules.extend((rs.name, r) for r in rs.rules.values())
    engine.load(
        state.auth_methods.values(),
        [AccessRole(rs.name, rs.description) for rs in state.roles.values()],
        associations,
        rules,
    )
    engine.set_author_policies(state.cedar)
    return engine


def resolve_identity(data: object, model: Model) -> Identity:
    """An identity from a JSON object of attributes (``Identity.from_attributes``), where ``auth_method``
    may name the auth method instead of giving its ``access_id``; ``auth_type`` then defaults to that
    method's type and ``principal_type`` to ``assumed-role`` (aws_iam) or ``access-key``."""
    if not isinstance(data, dict):
        raise ModelError("identity", "must be a JSON object of attributes")
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    name = values.pop("auth_method", None)
    if name is not None:
        am = model.auth_method(name, "auth_method")
        if values.setdefault("access_id", am.access_id) != am.access_id:
            raise ModelError("access_id", f"is not the access id of {am.name}")
        values.setdefault("auth_type", am.type)
    if isinstance(values.get("access_id"), str):
        am_by_id = model.by_access_id.get(values["access_id"])
        values.setdefault("auth_type", am_by_id.type if am_by_id else AWS_IAM)
    values.setdefault("principal_type", "access-key" if values.get("auth_type") == ACCESS_KEY else "assumed-role")
    return Identity.from_attributes(values)


# --- plans ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    action: str  # "add" | "change" | "remove"
    kind: str  # "auth-method" | "role" | "association" | "rule" | "cedar"
    name: str  # the auth method, role, or Cedar file
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "kind": self.kind, "name": self.name, **self.detail}


_MARK = {"add": "+", "change": "~", "remove": "-"}


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changes)

    def summary(self) -> dict[str, int]:
        out = {"add": 0, "change": 0, "remove": 0}
        for c in self.changes:
            out[c.action] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"changes": [c.to_dict() for c in self.changes], "summary": self.summary(), "text": self.text()}

    def text(self) -> str:
        """The plan as a readable diff, ending with a summary line."""
        if not self.changes:
            return "No changes: the server already holds what the files say.\n"
        lines = [render_change(c) for c in self.changes]
        s = self.summary()
        lines.append(f"Plan: {s['add']} to add, {s['change']} to change, {s['remove']} to remove.")
        return "\n".join(lines) + "\n"


def _show(value: object) -> str:
    return orjson.dumps(value).decode()


def _claims(sub_claims: Any) -> str:
    if not sub_claims:
        return ""
    return " where " + ", ".join(f"{k} like {' or '.join(_show(p) for p in v)}" for k, v in dict(sub_claims).items())


def render_change(c: Change) -> str:
    mark = _MARK[c.action]
    d = c.detail
    if c.kind == "auth-method":
        head = f"{mark} auth method {c.name}"
        if c.action == "add":
            body = [f"      {k} = {_show(v)}" for k, v in d["after"].items() if _worth_showing(k, v)]
            return "\n".join([f"{head} ({d['after']['type']})", *body])
        if c.action == "change":
            body = [f"      {k}: {_show(d['before'][k])} -> {_show(d['after'][k])}" for k in d["fields"]]
            return "\n".join([head, *body])
        return head
    if c.kind == "role":
        if c.action == "change":
            return (
                f"{mark} role {c.name}: description {_show(d['before'])} -> {_show(d['after'])} "
                "(the role is recreated with its associations and rules)"
            )
        if c.action == "remove":
            return f"{mark} role {c.name} (with its {d['associations']} associations and {d['rules']} rules)"
        return f"{mark} role {c.name}" + (f": {_show(d['description'])}" if d.get("description") else "")
    if c.kind == "association":
        return f"{mark}   association {c.name} -> {d['am-name']}{_claims(d['sub-claims'])}"
    if c.kind == "rule":
        caps = f"[{', '.join(d['capabilities'])}]"
        if c.action == "change":
            caps = f"[{', '.join(d['before'])}] -> {caps}"
        return f"{mark}   rule {c.name}: {d['rule-type']} {d['path']} {caps}"
    return f"{mark} cedar {c.name}"


def _worth_showing(key: str, value: object) -> bool:
    """A field of a new auth method that is set to something else than its default."""
    defaults: dict[str, object] = {"access-expires": 0, "jwt-ttl": DEFAULT_JWT_TTL, "sts-url": DEFAULT_STS_URL}
    return key not in ("name", "access-id", "type") and value not in ([], None) and defaults.get(key) != value


def _am_config(am: AuthMethod) -> dict[str, Any]:
    out = am.to_dict()
    del out["access-id"]
    return out


def managed_auth_method(am: AuthMethod) -> bool:
    return am.type == AWS_IAM


def diff_states(current: ModelState, desired: ModelState) -> Plan:
    """What turns ``current`` (a server) into ``desired`` (the files). Managed: aws_iam auth methods, every
    role but /admin, and the author Cedar files; access_key auth methods and the /admin role are never
    touched (``desired`` may only *name* access_key methods the server holds). Raises ModelError when
    ``desired`` asks for something that is not managed."""
    for name, am in desired.auth_methods.items():
        cur = current.auth_methods.get(name)
        if am.type == ACCESS_KEY:
            if cur is None or cur.type != ACCESS_KEY:
                raise ModelError(
                    "auth-methods",
                    f"{name}: the server holds no access_key auth method of that name "
                    "(rule files only name access_key methods, never create them)",
                )
        elif cur is not None and cur.type == ACCESS_KEY:
            raise ModelError("auth-methods", f"{name}: an access_key auth method on the server; files cannot change it")
    if ADMIN in desired.roles and not _same_role(desired.roles[ADMIN], current.roles.get(ADMIN)):
        raise ModelError("roles", "/admin is the server's own role; it is never managed by files or apply-model")
    plan = Plan()
    changes = plan.changes
    managed_now = {n: am for n, am in current.auth_methods.items() if managed_auth_method(am)}
    wanted = {n: am for n, am in desired.auth_methods.items() if managed_auth_method(am)}
    admin = current.roles.get(ADMIN)
    for name in sorted(managed_now.keys() | wanted.keys()):
        before, after = managed_now.get(name), wanted.get(name)
        if before is None and after is not None:
            changes.append(Change("add", "auth-method", name, {"after": _am_config(after)}))
        elif after is None and before is not None:
            if admin is not None and any(am_name == name for am_name, _ in admin.associations):
                raise ModelError(
                    "auth-methods",
                    f"{name} is associated with the /admin role, which files never "
                    "touch: remove that association by hand first",
                )
            changes.append(Change("remove", "auth-method", name, {"access-id": before.access_id}))
        elif before is not None and after is not None:
            a, b = _am_config(before), _am_config(after)
            fields = [k for k in b if a.get(k) != b[k]]
            if fields:
                changes.append(Change("change", "auth-method", name, {"before": a, "after": b, "fields": fields}))
    roles_now = {n: r for n, r in current.roles.items() if n != ADMIN}
    for name in sorted(roles_now.keys() | desired.roles.keys() - {ADMIN}):
        before_role, after_role = roles_now.get(name), desired.roles.get(name)
        if after_role is None:
            assert before_role is not None
            detail = {"associations": len(before_role.associations), "rules": len(before_role.rules)}
            changes.append(Change("remove", "role", name, detail))
            continue
        old_assocs: set[tuple[str, SubClaims]] = set()
        old_rules: dict[tuple[RuleType, str], RoleRule] = {}
        if before_role is None:
            changes.append(Change("add", "role", name, {"description": after_role.description}))
        else:
            if before_role.description != after_role.description:
                detail = {"before": before_role.description, "after": after_role.description}
                changes.append(Change("change", "role", name, detail))
            old_assocs = set(before_role.associations)
            old_rules = before_role.rules
        new_assocs = list(after_role.associations)
        for key in before_role.associations if before_role else ():
            if key not in after_role.associations:
                changes.append(Change("remove", "association", name, _assoc_detail(key)))
        for key in new_assocs:
            if key not in old_assocs:
                changes.append(Change("add", "association", name, _assoc_detail(key)))
        for key in sorted(old_rules.keys() | after_role.rules.keys()):
            old, new = old_rules.get(key), after_role.rules.get(key)
            if new is None:
                assert old is not None
                changes.append(Change("remove", "rule", name, old.to_dict()))
            elif old is None:
                changes.append(Change("add", "rule", name, new.to_dict()))
            elif old != new:
                detail = {**new.to_dict(), "before": old.to_dict()["capabilities"]}
                changes.append(Change("change", "rule", name, detail))
    for file in sorted(current.cedar.keys() | desired.cedar.keys()):
        old_text, new_text = current.cedar.get(file), desired.cedar.get(file)
        if old_text is None:
            changes.append(Change("add", "cedar", file))
        elif new_text is None:
            changes.append(Change("remove", "cedar", file))
        elif old_text != new_text:
            changes.append(Change("change", "cedar", file))
    return plan


def _same_role(a: RoleState, b: RoleState | None) -> bool:
    return (
        b is not None
        and a.description == b.description
        and set(a.associations) == set(b.associations)
        and a.rules == b.rules
    )


def _assoc_detail(key: tuple[str, SubClaims]) -> dict[str, Any]:
    return {"am-name": key[0], "sub-claims": {k: list(v) for k, v in key[1]}}


# --- TOML output ---------------------------------------------------------------------------------------


def _toml_string(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_key(name: str) -> str:
    short = name[1:] if name.startswith("/") and "/" not in name[1:] else name
    return short if _BARE.fullmatch(short) else _toml_string(name)


def _toml_value(value: object) -> str:
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key_plain(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def _toml_key_plain(key: str) -> str:
    return key if _BARE.fullmatch(key) else _toml_string(key)


def state_to_toml(state: ModelState, header: str = "") -> str:
    """Rule-file TOML for the managed part of ``state`` (the Cedar files are not TOML: write them beside)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    used_am = {am_name for name, rs in state.roles.items() if name != ADMIN for am_name, _ in rs.associations}
    for name in sorted(state.auth_methods):
        am = state.auth_methods[name]
        if am.type != AWS_IAM and name not in used_am:
            continue
        lines += ["", f"[auth_method.{_toml_key(name)}]"]
        if am.type != AWS_IAM:
            lines.append(f"type = {_toml_string(am.type)}")
            continue
        for binding, values in am.bindings():
            lines.append(f"{binding.field} = {_toml_value(list(values))}")
        if am.bound_ips:
            lines.append(f"bound_ips = {_toml_value(list(am.bound_ips))}")
        if am.access_expires:
            lines.append(f"access_expires = {am.access_expires}")
        if am.jwt_ttl != DEFAULT_JWT_TTL:
            lines.append(f"jwt_ttl = {am.jwt_ttl}")
        if am.sts_url and am.sts_url != DEFAULT_STS_URL:
            lines.append(f"sts_url = {_toml_string(am.sts_url)}")
    for name in sorted(state.roles):
        if name == ADMIN:
            continue
        rs = state.roles[name]
        key = _toml_key(name)
        lines += ["", f"[role.{key}]"]
        if rs.description:
            lines.append(f"description = {_toml_string(rs.description)}")
        for am_name, sub_claims in rs.associations:
            lines += ["", f"[[role.{key}.association]]", f"auth_method = {_toml_string(am_name)}"]
            if sub_claims:
                claims = {k: list(v) if len(v) > 1 else v[0] for k, v in sub_claims}
                lines.append(f"sub_claims = {_toml_value(claims)}")
        for rule in sorted(rs.rules.values(), key=lambda r: (r.rule_type, r.path)):
            d = rule.to_dict()
            lines += ["", f"[[role.{key}.rule]]", f"path = {_toml_string(rule.path)}"]
            lines.append(f"capabilities = {_toml_value(d['capabilities'])}")
            if rule.rule_type is not RuleType.ITEM:
                lines.append(f"rule_type = {_toml_string(str(rule.rule_type))}")
    return "\n".join(lines).lstrip("\n") + "\n"


# --- tests and exports ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestResult:
    case: TestCase
    passed: bool
    message: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.case.name} ({self.case.source})" + (
            "" if self.passed else f": {self.message}"
        )


def run_tests(rs: RuleSet, engine: Engine, now: int) -> list[TestResult]:
    """Runs the files' test cases against ``engine`` (built from the same files)."""
    results = []
    for case in rs.tests:
        attrs = case.identity
        if "$ref" in attrs:
            attrs = rs.identities.get(attrs["$ref"], {})
        try:
            identity = resolve_identity(attrs, engine.model)
        except ModelError as exc:
            results.append(TestResult(case, False, f"identity: {exc}"))
            continue
        problems = []
        if case.expect_login is not None:
            login = engine.authenticate(identity, case.now if case.now is not None else now)
            if login.allowed != case.expect_login:
                failed = ", ".join(r.rsplit("/", 1)[-1] for r in login.reasons) or "no permit"
                got = "allowed" if login.allowed else f"refused ({failed})"
                problems.append(f"expected login {'allowed' if case.expect_login else 'refused'}, got {got}")
        if case.expect is not None:
            assert case.capability is not None and case.path is not None
            decision = engine.decide(identity, case.capability, case.path, case.rule_type)
            if decision.decision != case.expect:
                why = ", ".join(decision.reasons) or "no rule grants it (default deny)"
                problems.append(f"expected {case.expect}, got {decision.decision} ({why})")
        results.append(TestResult(case, not problems, "; ".join(problems)))
    return results


def export_with_sources(engine: Engine, sources: Mapping[str, str]) -> str:
    """The engine's compiled Cedar, each policy annotated ``@source("FILE:LINE")`` beside its ``@id``."""
    policies = {}
    for pid, policy in engine.policies().items():
        annotations = dict(policy.get("annotations") or {})
        if pid in sources:
            annotations["source"] = sources[pid]
        policies[pid] = {**policy, "annotations": annotations}
    return cedar.to_text(policies)
