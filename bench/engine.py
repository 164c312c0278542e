"""Benchmark of the engine's decisions, at 10 rules and at 100,000 rules.

    .venv/bin/python bench/engine.py           # a readable table
    .venv/bin/python bench/engine.py --json    # one JSON object

Figures (µs per decision unless named otherwise):

- ``us_per_decision_10_rules``: one auth method, one role, 10 rules; ``decide`` on random paths, in a small
  fresh process of its own on 4 KiB pages (nothing else in it, as when it was measured first in this one).
- ``us_per_decision_100k_rules``: 10,000 auth methods, 10,000 roles x 10 rules, each auth method associated
  with one role, built with ``Engine.load``; ``decide`` for random callers and paths.
- ``scale_ratio``: the two above, 100k / 10, the median over three pairs of passes (each 100k pass right
  after a 10-rule pass, so both sides of a pair see the same phase of the host's other work; the pairs are
  in ``scale_ratio_passes``, the two figures above are the median passes' means). The 100k figure is taken
  as ``cedarkey serve`` runs the engine: once the model is loaded, its heap is collapsed onto transparent
  huge pages (``server/memory.py``; ``huge_pages_mib`` says how much). The same decisions on 4 KiB pages,
  measured just before (after a 10-rule pass of their own), give ``us_per_decision_100k_rules_small_pages``
  and ``scale_ratio_small_pages``.
- ``naive_us_per_decision_100k_rules``: one cedarpy PolicySet of every compiled policy, evaluated with
  ``cedarpy.is_authorized`` on the same requests; ``speedup_vs_naive`` = naive / engine.
- ``parsed_sets_100k``: the distinct parsed policy sets the engine holds (roles cut alike share theirs).
- ``us_rule_change_100k``: median over 50 changes of ``set_rule`` plus the first ``decide`` that sees it.
- ``decisions_per_s_batch_100k``: ``decide_batch`` of 1,000 different paths for one caller, every call with
  paths never asked before (the engine's memo answers none); ``us_per_decision_memo_hit``: the same batch
  asked again, answered from the memo.
- ``floor_us_one_policy``: one public ``cedarpy.is_authorized(request, PolicySet, Entities)`` on a one-policy
  set, in the same run; ``batch_vs_floor`` = floor / µs per decision in the batch.
- ``scale_ratio_median_of_rounds`` and ``batch_vs_floor_median_of_rounds``: the two ratios again, over
  interleaved rounds (each round measures both of its sides back to back, all in this process, after
  everything above), their medians; the rounds are listed in ``*_rounds``. A single figure on a shared
  machine moves with whatever else the host runs; a median of paired rounds much less.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cedarpy
import orjson
from cedarkey.engine import AccessRole, Association, AuthMethod, Engine, Identity, RoleRule, RuleType, cedar
from cedarkey.policies import schema_text
from cedarkey.server.memory import use_huge_pages

SCHEMA = schema_text()

ITEM = RuleType.ITEM

ACCOUNT = "123456789012"
N_ROLES = 10_000
RULES_PER_ROLE = 10
CAPS = ("read", "create", "update", "delete", "list")
#: The headline figures are the medians of this many pairs of passes (see Baseline).
PASSES = 3

TARGETS = {
    "scale_ratio": ("<=", 1.3),
    "speedup_vs_naive": (">=", 100.0),
    "us_rule_change_100k": ("<=", 20_000.0),
    "batch_vs_floor": (">=", 1.0),
    "memo_hit_rate_under_churn": (">=", 0.95),
}


def access_id(i: int) -> str:
    return f"p-{i:016d}"


def role_rules(i: int) -> list[RoleRule]:
    """Ten rules of role ``i``: its own tree, a shared tree, a deny, and the other rule types."""
    team = f"/team{i}"
    return [
        RoleRule.parse("item-rule", f"{team}/app/*", ["read", "list"]),
        RoleRule.parse("item-rule", f"{team}/db/*", ["read"]),
        RoleRule.parse("item-rule", f"{team}/db/admin/*", ["deny"]),
        RoleRule.parse("item-rule", f"{team}/ci/*/token", ["read", "update"]),
        RoleRule.parse("item-rule", f"{team}/scratch/*", ["read", "create", "update", "delete", "list"]),
        RoleRule.parse("item-rule", "/shared/config/*", ["read"]),
        RoleRule.parse("item-rule", "/shared/*/public", ["read", "list"]),
        RoleRule.parse("item-rule", f"/env/*/{team[1:]}/*", ["read"]),
        RoleRule.parse("role-rule", f"{team}/*", ["read"]),
        RoleRule.parse("auth-method-rule", f"{team}/*", ["read", "list"]),
    ]


def role_paths(i: int, rng: random.Random, *, rules_only: bool = False) -> tuple[str, str]:
    """A (capability, path) a caller of role ``i`` may ask about: mostly under its rules (allowed or denied),
    some (unless ``rules_only``) under none of them."""
    team = f"/team{i}"
    n = rng.randrange(1_000_000)
    paths = [
        f"{team}/app/svc{n}",
        f"{team}/db/pass{n}",
        f"{team}/db/admin/root{n}",
        f"{team}/ci/job{n}/token",
        f"{team}/scratch/a/b/{n}",
        f"/shared/config/key{n}",
        f"/shared/x{n}/public",
        f"/env/prod/{team[1:]}/k{n}",
        f"/elsewhere/{n}",
        f"{team}/other/{n}",
    ]
    return rng.choice(CAPS), rng.choice(paths[:-2] if rules_only else paths)


def caller(i: int) -> Identity:
    return Identity(
        access_id(i),
        "aws_iam",
        "assumed-role",
        account=ACCOUNT,
        role_name=f"role-{i}",
        arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/role-{i}/session",
    )


def build(n_roles: int) -> Engine:
    """``n_roles`` auth methods and roles, each auth method associated with its role, 10 rules each."""
    auth_methods = [
        AuthMethod(
            f"/aws/am{i}", access_id(i), "aws_iam", bound_aws_account_id=(ACCOUNT,), bound_role_name=(f"role-{i}",)
        )
        for i in range(n_roles)
    ]
    roles = [AccessRole(f"/roles/r{i}") for i in range(n_roles)]
    associations = [Association(f"ac-{i}", f"/roles/r{i}", access_id(i)) for i in range(n_roles)]
    rules = [(f"/roles/r{i}", r) for i in range(n_roles) for r in role_rules(i)]
    engine = Engine(SCHEMA)
    engine.load(auth_methods, roles, associations, rules)
    return engine


# --- measuring -------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e6


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Singles:
    mean: float
    p50: float
    p99: float


def single_decisions(engine: Engine, requests: list[tuple[Identity, str, str]], warmup: int) -> Singles:
    for identity, cap, path in requests[:warmup]:
        engine.decide(identity, cap, path)
    samples = []
    gc.disable()
    try:
        for identity, cap, path in requests[warmup:]:
            start = time.perf_counter()
            engine.decide(identity, cap, path)
            samples.append((time.perf_counter() - start) * 1e6)
    finally:
        gc.enable()
    return Singles(statistics.fmean(samples), percentile(samples, 0.5), percentile(samples, 0.99))


class Baseline:
    """The 10-rule engine in a small fresh process of its own, on 4 KiB pages, measuring a pass of
    ``single_decisions`` whenever asked: each 100k pass is paired with one taken just before it, so a
    phase of the host's other work (which can last longer than a pass) weighs on both sides of a ratio."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--baseline-process"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def measure(self) -> Singles:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{self.n}\n")
        self.process.stdin.flush()
        return Singles(**json.loads(self.process.stdout.readline()))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        if self.process.wait(timeout=60):
            raise SystemExit("the baseline process failed")


def baseline_process() -> None:
    """The other end of :class:`Baseline`: for each line ``n`` read, a pass of ``n`` decisions on the
    10-rule engine (a fifth of them warm-up), answered as one JSON line."""
    rng = random.Random(20240612)
    small = build(1)
    one = caller(0)
    for line in sys.stdin:
        n = int(line)
        s = single_decisions(small, [(one, *role_paths(0, rng)) for _ in range(n + n // 5)], warmup=n // 5)
        print(json.dumps({"mean": s.mean, "p50": s.p50, "p99": s.p99}), flush=True)


def random_requests(
    callers: list[Identity], indices: Sequence[int], n: int, rng: random.Random
) -> list[tuple[Identity, str, str]]:
    out = []
    for _ in range(n):
        i = rng.choice(indices)
        out.append((callers[i], *role_paths(i, rng)))
    return out


def miss_rate(engine: Engine, requests: list[tuple[Identity, str, str]]) -> float:
    """The share of ``requests`` whose decision had to build a PolicySet (a slice-cache miss)."""
    module = sys.modules[Engine.__module__]
    real = module.cedar.policy_set_of_encoded  # what the engine builds every handle with
    misses = 0

    def counting(policies: dict[str, Any]) -> Any:
        nonlocal misses
        misses += 1
        return real(policies)

    module.cedar.policy_set_of_encoded = counting
    try:
        for identity, cap, path in requests:
            engine.decide(identity, cap, path)
    finally:
        module.cedar.policy_set_of_encoded = real
    return misses / len(requests)


def churn(engine: Engine, rng: random.Random, *, ticks: int, hot: int = 1_000) -> dict[str, float]:
    """``hot`` callers each asking their 5 questions again, in simulated time: every 10 ms each caller asks
    one, and a rule of a role none of them holds changes. A memo answers a question asked before unless a
    change that could change its answer came in between: here none can."""
    callers = [caller(i) for i in range(hot)]
    questions = [[role_paths(i, rng) for _ in range(5)] for i in range(hot)]
    cold = range(hot, N_ROLES)
    asked = hits = 0
    seconds = 0.0
    for tick in range(ticks):
        i = rng.choice(cold)  # an unrelated rule changes: a role no hot caller is associated with
        pattern = f"/team{i}/app/*"
        caps = sorted({"read", "list"} ^ ({"create"} if tick % 2 else set()))
        engine.set_rule(f"/roles/r{i}", RoleRule.parse("item-rule", pattern, caps))
        start = time.perf_counter()
        for n, c in enumerate(callers):
            cap, path = questions[n][tick % 5]
            key = (cap, path, "item-rule")
            hits += key in engine.memos.of(c)
            engine.decide_batch(c, [key])
            asked += 1
        seconds += time.perf_counter() - start  # the decisions' time, not the changes'
    warm = hot * 5  # the first time each question is asked no memo can answer it
    return {
        "memo_hit_rate_under_churn": hits / (asked - warm),
        "us_per_decision_under_churn": seconds * 1e6 / asked,
    }


def cedar_request(cap: str, path: str) -> dict[str, Any]:
    return {
        "principal": {"type": "Identity", "id": "caller"},
        "action": {"type": "Action", "id": cap},
        "resource": {"type": "Item", "id": path},
        "context": {"path": path},
    }


def run(quick: bool = False) -> dict[str, Any]:
    rng = random.Random(20240611)
    out: dict[str, Any] = {}
    n_single = 2_000 if quick else 10_000

    # --- 10 rules: one auth method, one role, in a small fresh process of its own (see Baseline) ----------
    baseline = Baseline(n_single)
    small = build(1)  # for the rounds at the end, in this process
    one = caller(0)

    # --- 100k rules -----------------------------------------------------------------------------------
    start = time.perf_counter()
    big = build(N_ROLES)
    out["load_s_100k"] = time.perf_counter() - start
    out["policies_100k"] = len(big.policies())
    out["parsed_sets_100k"] = big.parsed_sets
    # Random callers drawn from all 10,000 auth methods, each with its login's Identity (reused for its
    # requests), random paths of its role. Every caller decides once before timing starts.
    callers = [caller(i) for i in range(N_ROLES)]
    warm = [(c, *role_paths(i, rng)) for i, c in enumerate(callers)]
    rng.shuffle(warm)
    reqs = warm + random_requests(callers, range(N_ROLES), n_single, rng)
    ten = baseline.measure()
    small_pages = single_decisions(big, reqs, warmup=len(warm))
    out["us_per_decision_100k_rules_small_pages"] = small_pages.mean
    out["scale_ratio_small_pages"] = small_pages.mean / ten.mean
    # What `cedarkey serve` does once its model is loaded: the heap onto huge pages (server/memory.py).
    pages = use_huge_pages()
    out["huge_pages_mib"] = pages.collapsed >> 20
    # New random requests (the first ones are in the callers' memos now), same distribution; each pass
    # right after a pass of the baseline.
    pairs = []
    for _ in range(PASSES):
        ten = baseline.measure()
        fresh = random_requests(callers, range(N_ROLES), n_single + n_single // 5, rng)
        pairs.append((ten, single_decisions(big, fresh, warmup=n_single // 5)))
    baseline.close()
    s10 = sorted((t for t, _ in pairs), key=lambda t: t.mean)[PASSES // 2]
    s100k = sorted((w for _, w in pairs), key=lambda w: w.mean)[PASSES // 2]
    out["us_per_decision_10_rules"] = s10.mean
    out["p50_us_10_rules"] = s10.p50
    out["p99_us_10_rules"] = s10.p99
    out["us_per_decision_100k_rules"] = s100k.mean
    out["p50_us_100k_rules"] = s100k.p50
    out["p99_us_100k_rules"] = s100k.p99
    out["scale_ratio_passes"] = [w.mean / t.mean for t, w in pairs]
    out["scale_ratio"] = statistics.median(out["scale_ratio_passes"])

    # The same with a hot working set of 100 callers (their slices stay in the engine's slice cache).
    hot = rng.sample(range(N_ROLES), 100)
    hot_reqs = random_requests(callers, hot, n_single + n_single // 5, rng)
    s_hot = single_decisions(big, hot_reqs, warmup=n_single // 5)
    out["us_per_decision_100k_rules_100_callers"] = s_hot.mean
    out["scale_ratio_100_callers"] = s_hot.mean / s10.mean

    # How often a decision misses the slice cache (untimed pass, same distribution as the headline).
    out["slice_cache_miss_rate_100k"] = miss_rate(big, random_requests(callers, range(N_ROLES), 2_000, rng))
    out["slice_cache_miss_rate_100_callers"] = miss_rate(big, random_requests(callers, hot, 2_000, rng))

    # Cold: a caller whose Identity is new and whose slices are not cached.
    cold_samples = []
    for i in rng.sample(range(N_ROLES), 300):
        c = caller(i)
        cap, path = role_paths(i, rng)
        cold_samples.append(timed(lambda c=c, cap=cap, path=path: big.decide(c, cap, path)))
    out["p50_us_100k_cold_caller"] = percentile(cold_samples, 0.5)

    # --- naive: one PolicySet holding everything ------------------------------------------------------
    start = time.perf_counter()
    whole = cedar.policy_set(big.policies())
    out["naive_parse_s_100k"] = time.perf_counter() - start
    naive_samples = []
    mismatches = 0
    for identity, cap, path in reqs[-(5 if quick else 15) :]:
        entities = cedarpy.Entities.from_json_str(orjson.dumps([identity.entity()]).decode())
        request = cedar_request(cap, path)
        start = time.perf_counter()
        answer = cedarpy.is_authorized(request, whole, entities)
        naive_samples.append((time.perf_counter() - start) * 1e6)
        mismatches += answer.allowed != big.decide(identity, cap, path).allowed
    del whole
    out["naive_us_per_decision_100k_rules"] = statistics.median(naive_samples)
    out["naive_disagreements"] = mismatches
    out["speedup_vs_naive"] = out["naive_us_per_decision_100k_rules"] / s100k.mean

    # --- one rule change until a decision sees it -----------------------------------------------------
    change_samples = []
    for k in range(50):
        i = rng.randrange(N_ROLES)
        c, role_name, pattern, path = caller(i), f"/roles/r{i}", f"/team{i}/app/*", f"/team{i}/app/x{k}"
        before = big.decide(c, "create", path).allowed  # the caller is active: its slice is cached
        caps = {str(cap) for cap in big.model.roles[role_name].rules[(ITEM, pattern)].capabilities}
        rule = RoleRule.parse("item-rule", pattern, sorted(caps ^ {"create"}))  # flips "create"
        start = time.perf_counter()
        big.set_rule(role_name, rule)
        decisions = 1
        while big.decide(c, "create", path).allowed is before:
            decisions += 1
            if decisions > 1_000:
                raise SystemExit("a rule change was never seen by a decision")
        change_samples.append((time.perf_counter() - start) * 1e6)
        out["rule_change_decisions_until_seen"] = max(out.get("rule_change_decisions_until_seen", 0), decisions)
    out["us_rule_change_100k"] = statistics.median(change_samples)
    out["max_us_rule_change_100k"] = max(change_samples)

    # --- batch: 1,000 different paths for one caller, each under at least one of its rules -------------
    i = rng.randrange(N_ROLES)
    c = caller(i)

    # Every timed call asks 1,000 paths never asked before: the engine's memo of decisions answers none.
    def fresh_batch() -> list[tuple[str, str, str]]:
        batch_paths: dict[str, str] = {}
        while len(batch_paths) < 1_000:
            cap, path = role_paths(i, rng, rules_only=True)
            batch_paths.setdefault(path, cap)
        return [(cap, path, "item-rule") for path, cap in batch_paths.items()]

    runs = 5 if quick else 21
    batches = [fresh_batch() for _ in range(runs + 1)]
    big.decide_batch(c, batches[0])  # warm-up
    batch_samples = [timed(lambda b=b: big.decide_batch(c, b)) for b in batches[1:]]
    batch = batches[1]
    batch_us = statistics.median(batch_samples) / len(batch)
    out["us_per_decision_batch_100k"] = batch_us
    # The same 1,000 questions asked again, with no model change in between: answered from the memo.
    out["us_per_decision_memo_hit"] = statistics.median(
        timed(lambda: big.decide_batch(c, batch)) for _ in range(9)
    ) / len(batch)
    out["decisions_per_s_batch_100k"] = 1e6 / batch_us

    # --- memos under churn: hot callers asking again while unrelated rules change ----------------------
    out.update(churn(big, rng, ticks=50 if quick else 200))

    # --- floor: one public cedarpy call on a one-policy set ------------------------------------------
    policy = 'permit(principal, action == Action::"read", resource is Item) when { context.path like "/team1/app/*" };'
    one_policy = cedarpy.PolicySet.from_str(policy)
    entities = cedarpy.Entities.from_json_str(orjson.dumps([caller(1).entity()]).decode())
    request = cedar_request("read", "/team1/app/x")
    assert cedarpy.is_authorized(request, one_policy, entities).allowed

    def public_call() -> Any:
        return cedarpy.is_authorized(request, one_policy, entities)

    for _ in range(500):
        public_call()
    floor_samples = [timed(public_call) for _ in range(5_000)]
    out["floor_us_one_policy"] = statistics.median(floor_samples)
    out["batch_vs_floor"] = out["floor_us_one_policy"] / batch_us

    # --- the same ratios over interleaved rounds: each round measures both sides back to back --------------
    scale_rounds, batch_rounds = [], []
    for _ in range(3 if quick else 15):
        tens = single_decisions(small, [(one, *role_paths(0, rng)) for _ in range(2_500)], warmup=500)
        wide = single_decisions(big, random_requests(callers, range(N_ROLES), 2_500, rng), warmup=500)
        scale_rounds.append(wide.mean / tens.mean)
        b = fresh_batch()
        per_decision = timed(lambda b=b: big.decide_batch(c, b)) / len(b)
        floor = statistics.median(timed(public_call) for _ in range(1_000))
        batch_rounds.append(floor / per_decision)
    out["scale_ratio_rounds"] = scale_rounds
    out["scale_ratio_median_of_rounds"] = statistics.median(scale_rounds)
    out["batch_vs_floor_rounds"] = batch_rounds
    out["batch_vs_floor_median_of_rounds"] = statistics.median(batch_rounds)

    out["targets_met"] = {name: _meets(out[name], *target) for name, target in TARGETS.items()}
    return out


def _meets(value: float, op: str, bound: float) -> bool:
    return value <= bound if op == "<=" else value >= bound


def table(out: dict[str, Any]) -> str:
    rows = [
        ("µs per decision, 10 rules (mean)", "us_per_decision_10_rules"),
        ("  p50 / p99", ("p50_us_10_rules", "p99_us_10_rules")),
        ("µs per decision, 100k rules (mean)", "us_per_decision_100k_rules"),
        ("  p50 / p99", ("p50_us_100k_rules", "p99_us_100k_rules")),
        ("  p50, a caller never seen before", "p50_us_100k_cold_caller"),
        ("  slice-cache miss rate", "slice_cache_miss_rate_100k"),
        ("scale ratio (100k / 10)", "scale_ratio"),
        ("  the same on 4 KiB pages: µs, ratio", ("us_per_decision_100k_rules_small_pages", "scale_ratio_small_pages")),
        ("  heap collapsed onto huge pages (MiB)", "huge_pages_mib"),
        ("µs per decision, 100k rules, 100 hot callers", "us_per_decision_100k_rules_100_callers"),
        ("  slice-cache miss rate", "slice_cache_miss_rate_100_callers"),
        ("  scale ratio, 100 hot callers", "scale_ratio_100_callers"),
        ("load 100k rules (s)", "load_s_100k"),
        ("naive: one PolicySet, µs per decision", "naive_us_per_decision_100k_rules"),
        ("naive: parse (s)", "naive_parse_s_100k"),
        ("speedup vs naive", "speedup_vs_naive"),
        ("rule change seen by a decision, median µs", "us_rule_change_100k"),
        ("batch of 1,000 paths: µs per decision", "us_per_decision_batch_100k"),
        ("batch: decisions per second", "decisions_per_s_batch_100k"),
        ("floor: one public is_authorized, µs", "floor_us_one_policy"),
        ("batch vs floor", "batch_vs_floor"),
        ("scale ratio, median of interleaved rounds", "scale_ratio_median_of_rounds"),
        ("batch vs floor, median of interleaved rounds", "batch_vs_floor_median_of_rounds"),
        ("the same batch again (memo): µs per decision", "us_per_decision_memo_hit"),
    ]
    lines = []
    for label, key in rows:
        if isinstance(key, tuple):
            value = " / ".join(f"{out[k]:,.2f}" for k in key)
        else:
            value = f"{out[key]:,.2f}"
            if key in TARGETS:
                op, bound = TARGETS[key]
                value += f"   (target {op} {bound:g}: {'met' if out['targets_met'][key] else 'MISSED'})"
        lines.append(f"{label:<44} {value}")
    lines.append(f"{'compiled policies at 100k':<44} {out['policies_100k']:,}")
    lines.append(f"{'parsed policy sets at 100k':<44} {out['parsed_sets_100k']:,}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--baseline-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_process:
        baseline_process()
        return 0
    out = run(quick=args.quick)
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        print(table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
