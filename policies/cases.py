"""The test cases kept beside the rules, and Cedar exports that say where each policy was written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cedarkey.engine import Engine, ModelError, cedar

from .rule_set import RuleSet, TestCase
from .state import resolve_identity


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
