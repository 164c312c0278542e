"""The engine: the access model compiled to Cedar, evaluated one small slice at a time.

cedarpy evaluates every policy of the set it is given, so a decision is asked only of the policies that can
apply to it, held as pre-parsed ``PolicySet`` handles:

- a capability on a path: for each role associated with the caller's auth method, the role's rules of that
  rule type whose literal prefix (the part before the first ``*``) is a prefix of the path. A role's rules of
  one rule type are a *group* with a prefix index; the slices a small group can have are pre-built (one per
  chain of prefixes, see ``Group``) and rebuilt when one of its rules changes, a large group's are parsed on
  demand and cached (bounded: the oldest goes first); a group with no matching prefix is skipped;
- ``authenticate`` on an auth method: that auth method's policies (a permit and one forbid per binding);
- the authors' global policies, one more handle, evaluated with every decision.

A rule of a role whose associations are all plain (an auth method, no sub-claims) is evaluated in its routed
form (``compile.routed_rule_policy``): a decision reaches the role's rules only through the caller's auth
method, which is exactly the association test, so that form leaves it out and reads nothing of the principal;
and a rule only on paths its literal prefix begins, so that form tests only the path past the prefix (a request
carries only what its handle reads), and the rules of roles cut alike share one parsed set. A group with
no other rules is evaluated with one shared empty entity store, not the caller's; exports and explanations
always show the full policy.

When a question's policies are in several slices (several roles, or the authors' policies), it is asked of
one handle of their union, merged once and cached: each native call costs about as much as the evaluation, so
one call per question is the point. A union larger than ``slices.MERGE_LIMIT`` policies is asked of each slice
instead, and the answers are combined as Cedar combines policies: any satisfied forbid denies; otherwise any
satisfied permit allows; otherwise deny. Either way the result is the decision Cedar gives for the union
(the property tests check it against a reference model), and its reasons are the satisfied policies that
determined it. Any evaluation error denies (Cedar skips an erroring policy, which for a forbid would fail
open); compiled policies are built so that they cannot error, and validated in the tests.

On-demand slices are keyed by the serial numbers of their policies, and a change gives the changed policies
new serials and rebuilds the pre-built slices of the groups it touched before it returns: no cached handle
can serve a stale answer; a merged handle is keyed by its parts (see ``slices.Slices``).
Changing one rule recompiles one policy and rebuilds one group.

The engine is not thread-safe: one thread (the server's event loop) owns it.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from . import cedar, compile
from .access_role import AccessRole, Association, SubClaims, sub_claims_match
from .auth_method import AuthMethod
from .capability import Capability, RuleType, parse_capability, parse_rule_type
from .decision import NO_POLICY, Decision, combine
from .delegation import Ceiling
from .errors import ModelError
from .glob import literal_prefix
from .identity import PRINCIPAL_UID, Identity
from .memo import Memos
from .model import ADMIN, Model
from .path import canonical_path
from .role_rule import RoleRule
from .slices import Group, Handles, Slice, Slices, context


def _NOBODY(identity: Identity) -> bool:
    return False


#: Engine versions: every change takes a new one, unique across engines (a memo never outlives its model).
_VERSIONS = itertools.count(1)

_ACTIONS = {c: compile.action_uid(str(c)) for c in Capability if c is not Capability.DENY}
_AUTHENTICATE = compile.action_uid("authenticate")


@dataclass(frozen=True, slots=True)
class PolicySource:
    """Where a compiled policy comes from."""

    kind: str  # "rule", "auth-method", "author"
    name: str  # role name, auth method name, or author file
    detail: dict[str, Any]


class Engine:
    def __init__(self, schema_text: str, *, memos: Memos | None = None) -> None:
        """``schema_text``: the Cedar schema every policy is validated against (the packaged one is
        ``cedarkey.policies.schema_text()``; the engine reads no file)."""
        self.schema_text = schema_text
        self.schema = cedar.Schema.from_str(schema_text)
        self.model = Model()
        # Each compiled policy as its orjson encoding: far less memory than the policies as dicts, and the
        # decisions' working set stays smaller (see bench/engine.py). The encoding leaves out the annotations,
        # which never change a decision: every handle Cedar evaluates is built from it, and Cedar keeps
        # annotations in two maps per policy. A policy's annotations are ``{"id": <its id>}`` unless
        # ``_annotations`` holds others (an author's).
        self._policies: dict[str, bytes] = {}
        self._annotations: dict[str, dict[str, str]] = {}
        # The evaluated form of the rule policies of roles whose associations are all plain, and the context
        # attributes it reads (see compile.routed_rule_policy); a handle built only of these is evaluated
        # without the caller's entities.
        self._routed: dict[str, tuple[bytes, cedar.Reads]] = {}
        self._serial: dict[str, int] = {}
        self._sources: dict[str, PolicySource] = {}
        self._counter = itertools.count(1)
        self._am_ids: dict[str, list[str]] = {}  # access id -> its authenticate policy ids
        self._groups: dict[tuple[str, RuleType], Group] = {}
        self._dirty: set[tuple[str, RuleType]] = set()
        self._global_ids: list[str] = []
        self._global_slice: Slice | None = None
        self.version = next(_VERSIONS)
        self._parsed = cedar.ParsedSets()
        self._slices = Slices(self._policy_set, self._serial)
        self.memos = memos if memos is not None else Memos()
        self._break_glass: str | None = None
        self._author_forbids = False

    # --- policies ------------------------------------------------------------------------------------

    def _put(
        self,
        policy_id: str,
        policy: dict[str, Any],
        source: PolicySource,
        routed: tuple[dict[str, Any], cedar.Reads] | None = None,
    ) -> None:
        annotations = policy.get("annotations") or {}
        self._policies[policy_id] = orjson.dumps({k: v for k, v in policy.items() if k != "annotations"})
        if routed is not None:
            self._routed[policy_id] = (orjson.dumps(routed[0]), routed[1])
        else:
            self._routed.pop(policy_id, None)
        if annotations != {"id": policy_id}:
            self._annotations[policy_id] = annotations
        else:
            self._annotations.pop(policy_id, None)
        self._serial[policy_id] = next(self._counter)
        self._sources[policy_id] = source

    def _drop(self, policy_id: str) -> None:
        del self._policies[policy_id]
        self._annotations.pop(policy_id, None)
        self._routed.pop(policy_id, None)
        del self._serial[policy_id]
        del self._sources[policy_id]

    def _compile_auth_method(self, am: AuthMethod) -> None:
        for pid in self._am_ids.pop(am.access_id, ()):
            self._drop(pid)
        policies = compile.auth_method_policies(am)
        for pid, policy in policies.items():
            part = pid.rsplit("/", 1)[1]
            self._put(pid, policy, PolicySource("auth-method", am.name, {"binding": part}))
        self._am_ids[am.access_id] = list(policies)

    def _compile_rule(self, role: AccessRole, rule: RoleRule) -> None:
        associations = list(role.associations.values())
        if rule.is_deny and role.name != ADMIN:  # the break-glass auth method is beyond other roles' denies
            exempt = self.model.break_glass_access_id
            associations = [a for a in associations if a.access_id != exempt]
        pid, policy = compile.rule_policy(role.name, rule, associations)
        # Routing to the role's groups tests exactly this rule's associations when all of them apply, plain.
        plain = len(associations) == len(role.associations) > 0 and not any(a.sub_claims for a in associations)
        key = (role.name, rule.rule_type)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = Group()
        if pid not in group.ids:
            group.ids.add(pid)
            # interned: a prefix many roles hold (a shared tree) is one object, warm for all their decisions
            group.index.add(sys.intern(literal_prefix(rule.path)), pid)
        routed = compile.routed_rule_policy(rule) if plain else None
        self._put(pid, policy, PolicySource("rule", role.name, rule.to_dict()), routed)
        self._dirty.add(key)

    def _uncompile_rule(self, role_name: str, rule: RoleRule) -> None:
        pid = compile.rule_policy_id(role_name, rule.rule_type, rule.path)
        self._drop(pid)
        key = (role_name, rule.rule_type)
        group = self._groups[key]
        group.ids.discard(pid)
        group.index.remove(literal_prefix(rule.path), pid)
        if group.ids:
            self._dirty.add(key)
        else:
            del self._groups[key]
            self._dirty.discard(key)

    def _flush(self, affected: Callable[[Identity], bool] | None = None) -> None:
        """Rebuilds the pre-built slices of the groups changed since the last flush; a new version. The
        memos of the ``affected`` identities (None: all) are dropped: only their decisions can have changed."""
        self.version = next(_VERSIONS)
        self.memos.invalidate(affected)
        self._break_glass = self.model.break_glass_access_id
        for key in self._dirty:
            group = self._groups.get(key)
            if group is not None:
                group.rebuild(self._policy_set, self._routed)
        self._dirty.clear()

    def _compile_role_rules(self, role: AccessRole) -> None:
        for rule in role.rules.values():
            self._compile_rule(role, rule)

    # --- model changes (each validates first, then applies; a refusal changes nothing) ---------------

    def add_auth_method(self, am: AuthMethod) -> None:
        self.model.add_auth_method(am)
        self._compile_auth_method(am)
        self._flush(self._of_auth_method(am))

    def update_auth_method(self, am: AuthMethod) -> AuthMethod:
        old = self.model.update_auth_method(am)
        self._compile_auth_method(am)
        self._flush(self._of_auth_method(am))
        return old

    def delete_auth_method(self, name: object) -> tuple[AuthMethod, list[Association]]:
        am, gone = self.model.delete_auth_method(name)
        for pid in self._am_ids.pop(am.access_id, ()):
            self._drop(pid)
        for role_name in {a.role_name for a in gone}:
            self._compile_role_rules(self.model.roles[role_name])
        self._flush(self._of_auth_method(am))
        return am, gone

    def add_role(self, role: AccessRole) -> None:
        self.model.add_role(role)
        self._flush(_NOBODY)  # a new role has no associations: nobody's decisions change

    def delete_role(self, name: object) -> AccessRole:
        affected = self._of_role(self.model.role(name))  # before the model forgets the role's associations
        role = self.model.delete_role(name)
        for rule in role.rules.values():
            self._uncompile_rule(role.name, rule)
        self._flush(affected)
        return role

    def associate(
        self, role_name: object, am_name: object, sub_claims: SubClaims = (), assoc_id: str | None = None
    ) -> Association:
        assoc = self.model.associate(role_name, am_name, sub_claims, assoc_id)
        self._compile_role_rules(self.model.roles[assoc.role_name])
        self._flush(self._of_association(assoc))
        return assoc

    def delete_association(self, assoc_id: object) -> Association:
        assoc = self.model.delete_association(assoc_id)
        self._compile_role_rules(self.model.roles[assoc.role_name])
        self._flush(self._of_association(assoc))
        return assoc

    def set_rule(self, role_name: object, rule: RoleRule) -> RoleRule | None:
        role = self.model.role(role_name, "role-name")
        old = self.model.set_rule(role.name, rule)
        self._compile_rule(role, rule)
        self._flush(self._of_role(role))
        return old

    def delete_rule(self, role_name: object, rule_type: object, path: object) -> RoleRule:
        role = self.model.role(role_name, "role-name")
        rule = self.model.delete_rule(role.name, parse_rule_type(rule_type), path)
        self._uncompile_rule(role.name, rule)
        self._flush(self._of_role(role))
        return rule

    # --- whose decisions a change can change (the others keep their memos) ---------------------------

    def _of_auth_method(self, am: AuthMethod) -> Callable[[Identity], bool] | None:
        if am.name == ADMIN or am.access_id == self._break_glass:  # the break glass is in every deny rule
            return None
        return lambda identity: identity.access_id == am.access_id

    def _of_association(self, assoc: Association) -> Callable[[Identity], bool] | None:
        if assoc.role_name == ADMIN:
            return None
        return lambda identity: identity.access_id == assoc.access_id

    def _of_role(self, role: AccessRole) -> Callable[[Identity], bool] | None:
        """The identities associated with ``role`` now (an association's auth method, and its sub-claims):
        taken before a change that drops associations, which the predicate must still see."""
        if role.name == ADMIN:
            return None
        associations = list(role.associations.values())
        return lambda identity: any(
            a.access_id == identity.access_id and sub_claims_match(a.sub_claims, identity) for a in associations
        )

    def set_author_policies(self, files: Mapping[str, str]) -> None:
        """Replaces the authors' global policies: ``{source name: Cedar text}``, all validated first.

        Each policy's id is ``file:"<source>"/<n>`` (its position in the file), or
        ``file:"<source>"/<@id>`` when it has an ``@id`` annotation.
        """
        compiled: dict[str, tuple[str, dict[str, Any], PolicySource]] = {}
        for source, text in sorted(files.items()):
            try:
                policies = cedar.to_json(text)
            except ValueError as exc:
                raise ModelError(source, f"not valid Cedar: {exc}") from None
            for n, policy in enumerate(policies.values()):
                annotations = policy.setdefault("annotations", {})
                local = annotations.get("id") or str(n)
                pid = f"file:{compile.quote(source)}/{local}"
                if pid in compiled:
                    raise ModelError(source, f"duplicate policy id {local!r}")
                annotations["id"] = pid
                compiled[pid] = (source, policy, PolicySource("author", source, {"index": n}))
        errors = cedar.validate_each({pid: p for pid, (_, p, _) in compiled.items()}, self.schema)
        if errors:
            pid, message = errors[0]
            raise ModelError(compiled[pid][0], f"{pid} fails the schema: {message}")
        for pid in self._global_ids:
            self._drop(pid)
        for pid, (_, policy, src) in compiled.items():
            self._put(pid, policy, src)
        self._global_ids = list(compiled)
        self._author_forbids = any(p["effect"] == "forbid" for _, p, _ in compiled.values())
        self._flush()
        self._global_slice = self._policy_set(self._global_ids) if compiled else None

    # --- decisions -----------------------------------------------------------------------------------

    def _entities(self, identity: Identity) -> Any:
        handle = identity._entities
        if handle is None:
            handle = cedar.entities([identity.entity()])
            object.__setattr__(identity, "_entities", handle)
        return handle

    def _route(self, access_id: str, rule_type: RuleType) -> tuple[Group, ...]:
        """The rule groups of ``rule_type`` that a caller through ``access_id`` can be granted by: kept with the
        caller's memo, for this engine version, so a decision goes straight to them."""
        groups = (self._groups.get((r, rule_type)) for r in sorted(self.model.roles_by_access_id.get(access_id, ())))
        return tuple(g for g in groups if g is not None)

    @property
    def parsed_sets(self) -> int:
        """How many distinct parsed policy sets the engine's handles hold (equal slices share one)."""
        return len(self._parsed)

    def roles_of(self, access_id: str) -> list[str]:
        """The access roles associated with ``access_id``'s auth method, by name (sub-claims decide per rule)."""
        return sorted(self.model.roles_by_access_id.get(access_id, ()))

    def candidates(self, access_id: str, rule_type: RuleType, path: str) -> list[str]:
        """The ids of the policies a decision on ``path`` evaluates (the slice), globals included."""
        ids: list[str] = []
        for role_name in sorted(self.model.roles_by_access_id.get(access_id, ())):
            group = self._groups.get((role_name, rule_type))
            if group is not None:
                group.index.candidates(path, ids)
        if access_id != self._break_glass:
            ids.extend(self._global_ids)
        return ids

    def decide(
        self, identity: Identity, capability: object, path: object, rule_type: object = RuleType.ITEM
    ) -> Decision:
        """May ``identity`` exercise ``capability`` on ``path`` under ``rule_type``?"""
        return self.decide_batch(identity, [(capability, path, rule_type)])[0]

    def decide_batch(self, identity: Identity, requests: Sequence[tuple[object, object, object]]) -> list[Decision]:
        """Decisions for ``(capability, path, rule_type)`` requests, in order. Bad input raises ModelError
        (its field names the request: ``requests[3].path``).

        A decision is remembered for the identity until the model changes (see :mod:`.memo`), so a caller
        asking the same question again is answered from memory. Author policies never apply to the
        break-glass auth method's identities.
        """
        n = len(requests)
        results: list[Decision | None] = [None] * n
        memo = self.memos.of(identity)
        routes: dict[RuleType, tuple[Group, ...]] = memo.routes
        # handle id -> (handle, whether it reads the principal, request indices, Cedar requests)
        work: dict[int, tuple[Slice, bool, list[int], list[dict[str, Any]]]] = {}
        pending: list[tuple[int, tuple[object, object, object]]] = []  # (index, memo key)
        global_slice = self._global_slice if identity.access_id != self._break_glass else None
        in_group, to_evaluate = self._slices.in_group, self._slices.to_evaluate
        for i, key in enumerate(requests):
            try:
                known = memo.get(key)  # type: ignore[arg-type]
            except TypeError:  # unhashable input: not a memo key, and the checks below refuse it
                known = None
            if known is not None:
                results[i] = known
                continue
            capability, path, rule_type = key
            try:
                cap = parse_capability(capability)
                rt = parse_rule_type(rule_type)
                p = canonical_path(path)
            except ModelError as exc:
                raise ModelError(f"requests[{i}].{exc.field}" if n > 1 else exc.field, exc.message) from None
            route = routes.get(rt)
            if route is None:
                route = routes[rt] = self._route(identity.access_id, rt)
            parts: list[tuple[Slice, bool]] = []
            for group in route:
                found = in_group(group, p)
                if found is not None:
                    parts.append((found, group.reads_principal))
            if global_slice is not None:
                parts.append((global_slice, True))
            handles: Handles = to_evaluate(parts)
            if handles:
                request = {
                    "principal": PRINCIPAL_UID,
                    "action": _ACTIONS[cap],
                    "resource": {"type": rt.entity_type, "id": p},
                    "context": context(p, handles),
                }
                for handle, reads_principal in handles:
                    entry = work.get(id(handle))
                    if entry is None:
                        entry = work[id(handle)] = (handle, reads_principal, [], [])
                    entry[2].append(i)
                    entry[3].append(request)
            pending.append((i, key))
        several: dict[int, list[Decision]] = {}  # the requests evaluated against more than one handle
        for handle, reads_principal, indices, reqs in work.values():
            ents = self._entities(identity) if reads_principal else cedar.NO_ENTITIES
            for i, decision in zip(indices, handle.evaluate(reqs, ents), strict=True):
                earlier = results[i]
                if earlier is None:
                    results[i] = decision
                else:
                    several.setdefault(i, [earlier]).append(decision)
        for i, parts in several.items():
            results[i] = combine(parts)
        memos = self.memos
        for i, key in pending:
            decision = results[i]
            if decision is None:  # no policy can apply
                decision = results[i] = NO_POLICY
            try:
                memos.remember(memo, key, decision)
            except TypeError:
                pass
        return results  # type: ignore[return-value]

    def authenticate(self, identity: Identity, now: int) -> Decision:
        """May ``identity`` log in through the auth method it names (``identity.access_id``) at ``now``?"""
        am_ids = self._am_ids.get(identity.access_id)
        if not am_ids:
            return NO_POLICY
        if isinstance(now, bool) or not isinstance(now, int | float) or not 0 <= now < 2**62:
            raise ModelError("now", "must be epoch seconds")
        ids = am_ids if identity.access_id == self._break_glass else am_ids + self._global_ids
        request = {
            "principal": PRINCIPAL_UID,
            "action": _AUTHENTICATE,
            "resource": {"type": "AuthMethod", "id": identity.access_id},
            "context": orjson.dumps({"now": int(now)}).decode(),
        }
        return self._slices.of_ids(ids).evaluate([request], self._entities(identity))[0]

    def admits(self, identity: Identity, logged_in_at: float) -> bool:
        """Would the auth method's bindings, as they are now, let ``identity`` log in as it did at
        ``logged_in_at``? (A session whose identity they refuse ends: see the server's token registry.)"""
        return self.authenticate(identity, int(logged_in_at)).allowed

    def ceiling(self, identity: Identity) -> Ceiling:
        """What ``identity`` holds, the most it may grant (see :mod:`.delegation`)."""
        return Ceiling(self.model, identity, author_forbids=self._author_forbids)

    # --- explanations and export ---------------------------------------------------------------------

    def source(self, policy_id: str) -> dict[str, Any]:
        src = self._sources[policy_id]
        return {"id": policy_id, "kind": src.kind, "name": src.name, **src.detail}

    def explain(
        self, identity: Identity, capability: object, path: object, rule_type: object = RuleType.ITEM
    ) -> dict[str, Any]:
        """The decision with its reasons spelled out: roles, the policies evaluated, those that decided."""
        rt = parse_rule_type(rule_type)
        p = canonical_path(path)
        decision = self.decide(identity, capability, p, rt)
        considered = self.candidates(identity.access_id, rt, p)
        roles = self.roles_of(identity.access_id)
        if decision.errors:
            why = "an evaluation error: denied (fail closed)"
        elif decision.allowed:
            why = "allowed by the policies listed in determining"
        elif decision.reasons:
            why = "denied by a deny rule or forbid policy listed in determining"
        elif not roles:
            why = "denied: no access role is associated with this auth method"
        else:
            why = "denied: no rule grants this capability on this path (default deny)"
        return {
            "decision": decision.decision,
            "path": p,
            "capability": str(capability),
            "rule-type": str(rt),
            "why": why,
            "roles": roles,
            "determining": [self.source(i) for i in decision.reasons],
            "considered": [self.source(i) for i in considered],
            "errors": list(decision.errors),
            "cedar": cedar.to_text(self._decoded(decision.reasons)),
        }

    def policies(self) -> dict[str, dict[str, Any]]:
        """Every compiled policy in Cedar's JSON form, keyed by id."""
        return self._decoded(self._policies)

    def author_policies(self) -> dict[str, dict[str, Any]]:
        """The authors' global policies (from ``set_author_policies``) in Cedar's JSON form, keyed by id."""
        return self._decoded(self._global_ids)

    def export_cedar(self) -> str:
        """The whole compiled policy set as Cedar text; each policy's ``@id`` is its policy id."""
        return cedar.to_text(self.policies())

    def validate(self) -> list[str]:
        """Schema validation errors of the whole compiled set (empty when it validates)."""
        return cedar.validate(self.policies(), self.schema)

    def _decoded(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        out = {}
        for i in ids:
            policy = orjson.loads(self._policies[i])
            annotations = self._annotations.get(i)
            policy["annotations"] = {"id": i} if annotations is None else dict(annotations)  # a caller's copy
            out[i] = policy
        return out

    def _policy_set(self, ids: Sequence[str]) -> Slice:
        """The handle Cedar evaluates for ``ids``: each rule in its routed form where it has one."""
        encoded: list[bytes] = []
        reads: set[tuple[str, int]] = set()
        for i in ids:
            policy, policy_reads = self._routed.get(i) or (self._policies[i], compile.PATH_READS)
            encoded.append(policy)
            reads.update(policy_reads)
        return self._parsed.handle(ids, encoded, tuple(sorted(reads)))

    # --- bulk loading --------------------------------------------------------------------------------

    def load(
        self,
        auth_methods: Iterable[AuthMethod],
        roles: Iterable[AccessRole],
        associations: Iterable[Association],
        rules: Iterable[tuple[str, RoleRule]],
    ) -> None:
        """Fills an empty engine; rule policies are compiled once, after every association is known."""
        if self.model.auth_methods or self.model.roles:
            raise ModelError("", "load() fills an empty engine")
        model = self.model
        for am in auth_methods:
            model.add_auth_method(am)
        for role in roles:
            model.add_role(AccessRole(role.name, role.description))
        by_access_id = model.by_access_id
        for assoc in associations:
            am = by_access_id.get(assoc.access_id)
            if am is None:
                raise ModelError("access-id", f"association {assoc.assoc_id} names an unknown auth method")
            model.associate(assoc.role_name, am.name, assoc.sub_claims, assoc.assoc_id)
        for role_name, rule in rules:
            model.set_rule(role_name, rule)
        for am in model.auth_methods.values():
            self._compile_auth_method(am)
        for role in model.roles.values():
            self._compile_role_rules(role)
        self._flush()
