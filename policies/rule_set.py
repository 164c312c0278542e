"""What a rules directory says, with where it says it: the parsed definitions and the :class:`RuleSet`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cedarkey.engine import AuthMethod, Engine, RoleRule, compile
from cedarkey.engine.access_role import SubClaims

from .cedar_files import CedarFile
from .diagnostics import Diagnostic, RuleFilesError, Source
from .state import ModelState, RoleState, build_engine


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
