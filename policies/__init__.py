"""Authoring: the Cedar schema, the rule files policy authors keep under version control, and the tools that
read, check, test, plan and write them. Built on the engine (``cedarkey.engine``), which knows nothing of it,
as cedar-policy's front end is built on ``cedar-policy-core``."""

from .cases import TestResult, export_with_sources, run_tests
from .diagnostics import Diagnostic, RuleFilesError, Source
from .parser import parse_rule_files
from .plan import Change, Plan, diff_states
from .rule_set import RuleSet
from .schema import schema_text
from .state import (
    ModelState,
    RoleState,
    build_engine,
    offline_access_id,
    resolve_identity,
    state_from_json,
    state_from_model,
    state_to_json,
)
from .toml_writer import state_to_toml
from .whocan import can, who_can

__all__ = [
    "Change",
    "Diagnostic",
    "ModelState",
    "Plan",
    "RoleState",
    "RuleFilesError",
    "RuleSet",
    "Source",
    "TestResult",
    "build_engine",
    "can",
    "diff_states",
    "export_with_sources",
    "offline_access_id",
    "parse_rule_files",
    "resolve_identity",
    "run_tests",
    "schema_text",
    "state_from_json",
    "state_from_model",
    "state_to_json",
    "state_to_toml",
    "who_can",
]
