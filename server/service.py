"""The service: one handler per command, each validating its input, asking the engine, then acting.

Reads are served from memory (the engine, the token registry). Writes take one asyncio lock, are checked
against the in-memory model, committed to the store in a worker thread (one transaction), and only then
applied to the engine: a refused or failed write changes nothing, and an acknowledged one is durable.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from cedarkey.engine import (
    ACCESS_KEY,
    ADMIN,
    AWS_IAM,
    BINDINGS,
    AccessRole,
    AlreadyExists,
    AuthMethod,
    Capability,
    Engine,
    Grant,
    Identity,
    ModelError,
    NotFound,
    RoleRule,
    RuleType,
    VersionConflict,
    canonical_path,
    errors,
    new_access_id,
    parse_capability,
    parse_rule_type,
    parse_sub_claims,
)
from cedarkey.engine.access_role import Association, new_assoc_id
from cedarkey.engine.delegation import association_grants, lift_grants, rule_grants, widened_bindings
from cedarkey.engine.errors import clip, shown
from cedarkey.policies import schema_text
from starlette.concurrency import run_in_threadpool

from .audit import AuditLog
from .cluster import Follower
from .config import Settings
from .errors import ApiError, AuthenticationFailed, bad_request, permission_denied
from .metrics import Metrics
from .policy_api import stored_author_policies
from .secret_box import SecretBox, SecretBoxError
from .store import STATIC_SECRET, ChangeCursor, Store, StoredItem, StoredToken, StoreError, new_item_id
from .sts import LoginFailed, MemoryReplayGuard, StsVerifier
from .sts_urls import StsUrls
from .tokens import Session, TokenRegistry, new_access_key, new_token, session_of, token_hash

log = logging.getLogger("cedarkey.server")

ITEM, ROLE, AM = RuleType.ITEM, RuleType.ROLE, RuleType.AUTH_METHOD
READ, CREATE, UPDATE, DELETE, LIST = (
    Capability.READ,
    Capability.CREATE,
    Capability.UPDATE,
    Capability.DELETE,
    Capability.LIST,
)
MAX_REQUESTS = 1000
#: Seconds between purges of expired tokens (memory and store).
HOUSEKEEPING_INTERVAL = 60.0
MAX_SECRET_BYTES = 64 * 1024
#: Set once every stored value is bound to its item's id and version (no legacy value is accepted after).
ITEMS_BOUND_META = "items-bound-to-id-and-version"

Args = dict[str, Any]


class ProofGuard:
    """Single use of login proofs. ``claim`` (the verifier calls it before STS) refuses at once a proof this
    process has seen; the store's unique row, written in the same transaction as the token the login issues
    (``Store.add_token(..., proof=...)``), refuses it on every node sharing the store, also when two copies
    arrive at two nodes at the same moment. The claimed key travels from ``claim`` to the token write in a
    context variable: both happen in the task of one login."""

    def __init__(self) -> None:
        self._memory = MemoryReplayGuard()

    async def claim(self, key: str, expires_at: float) -> bool:
        if not await self._memory.claim(key, expires_at):
            return False
        _claimed_proof.set((hashlib.sha256(key.encode()).digest(), expires_at))
        return True


_claimed_proof: contextvars.ContextVar[tuple[bytes, float] | None] = contextvars.ContextVar(
    "cedarkey_claimed_proof", default=None
)


class Service:
    def __init__(self, settings: Settings, store: Store, box: SecretBox, *, engine: Engine | None = None) -> None:
        self.settings = settings
        self.store = store
        self.box = box
        self.engine = engine or Engine(schema_text())
        self.tokens = TokenRegistry()
        self.metrics = Metrics()
        self.audit = AuditLog(settings.audit_path)
        self.sts_urls = StsUrls(settings.allowed_sts_urls)
        self.verifier = StsVerifier(
            settings.server_id, ProofGuard(), timeout=settings.sts_timeout, on_sts=self.metrics.observe_sts
        )
        self._lock = asyncio.Lock()
        self._author_policies: dict[str, str] = {}
        self.follower: Follower | None = None
        self.legacy_items = not self.bind_legacy_items()
        self._housekeeping: asyncio.Task[None] | None = None
        self._unknown_tokens: dict[bytes, float] = {}
        self.load()

    # --- life cycle ----------------------------------------------------------------------------------

    def load(self) -> None:
        """Replays the stored model into a fresh engine and the live tokens into the registry."""
        self.engine, self.tokens, self.change_position = self._read_state()

    def _read_state(self) -> tuple[Engine, TokenRegistry, int]:
        position = self.store.latest_change()  # before the snapshot: what follows it is caught up later
        snapshot = self.store.load()
        engine = Engine(self.engine.schema_text)
        engine.load(snapshot.auth_methods, snapshot.roles, snapshot.associations, snapshot.rules)
        self._author_policies = stored_author_policies(self.store)
        if self._author_policies:
            try:
                engine.set_author_policies(self._author_policies)
            except ModelError as exc:  # stored by an older cedarkey, say: serve the rules, say so loudly
                log.error("the stored author policies are refused: %s", exc)
        tokens = TokenRegistry()
        for tok in self.store.load_tokens(time.time()):
            try:
                tokens.add(tok.token_hash, session_of(tok))
            except ModelError:
                continue
        return engine, tokens, position

    async def reload(self) -> None:
        """Rebuilds memory from the store off the event loop, then swaps it in (a node that fell behind)."""
        state = await run_in_threadpool(self._read_state)
        async with self._lock:
            self.engine, self.tokens, position = state
        if self.follower is not None:
            self.follower.cursor = ChangeCursor(self.store, position)

    async def start(self) -> None:
        """Starts following the store's change feed (other nodes' writes become live here within a second)
        and the housekeeping of expired tokens."""
        self.follower = Follower(self, self.change_position)
        self.follower.start()
        self._housekeeping = asyncio.get_running_loop().create_task(self._housekeep_every(HOUSEKEEPING_INTERVAL))

    async def housekeep(self, now: float) -> tuple[int, int]:
        """Forgets expired tokens, in memory and in the store (with expired login proofs); returns how many
        sessions and stored tokens went."""
        in_memory = self.tokens.purge(now)
        stored = await run_in_threadpool(self.store.purge_expired, now)
        self._forget_unknown_tokens(now)
        return in_memory, stored

    def _forget_unknown_tokens(self, now: float) -> None:
        """Drops the remembered misses of :meth:`session_or_lookup` whose second has passed."""
        self._unknown_tokens = {d: t for d, t in self._unknown_tokens.items() if t > now}

    async def _housekeep_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.housekeep(time.time())
            except StoreError as exc:  # unavailable for now: the next round tries again
                log.warning("housekeeping could not purge expired tokens: %s", exc)

    async def aclose(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        if self.follower is not None:
            await self.follower.stop()
        await self.verifier.aclose()
        self.audit.close()
        self.store.close()

    # --- helpers -------------------------------------------------------------------------------------

    def session(self, token: object) -> Session:
        session = self.tokens.check(token, time.time())
        if session is None:
            raise AuthenticationFailed()
        return session

    async def session_or_lookup(self, token: object) -> Session:
        """Like :meth:`session`; a token unknown here is looked up in the store once, since another node may
        have issued it a moment ago (its change may not have arrived yet). Misses are remembered for 1 s."""
        now = time.time()
        session = self.tokens.check(token, now)
        if session is not None:
            return session
        if type(token) is not str or not token.startswith("t-") or len(token) > 128:
            raise AuthenticationFailed()
        digest = token_hash(token)
        if self._unknown_tokens.get(digest, 0) > now:
            raise AuthenticationFailed()
        stored = await run_in_threadpool(self.store.get_token, digest, now)
        if stored is None:
            if len(self._unknown_tokens) > 10_000:
                self._forget_unknown_tokens(now)
            self._unknown_tokens[digest] = now + 1.0
            raise AuthenticationFailed()
        session = session_of(stored)
        self.tokens.add(digest, session)
        return session

    def require(self, session: Session, capability: Capability, path: str, rule_type: RuleType) -> None:
        decision = self.engine.decide(session.identity, capability, path, rule_type)
        (self.metrics.allowed if decision.allowed else self.metrics.denied).inc()
        if not decision.allowed:
            raise permission_denied(str(capability), path, str(rule_type))

    def within_ceiling(self, session: Session, grants: list[Grant]) -> None:
        """The caller holds everything ``grants`` hand out (see ``cedarkey.engine.delegation``)."""
        if grants:
            why = self.engine.ceiling(session.identity).first_shortfall(grants)
            if why is not None:
                self.metrics.denied.inc()
                raise ApiError(403, "PermissionDenied", why)

    def require_full_admin(self, session: Session, what: str) -> None:
        if not self.engine.ceiling(session.identity).full_admin:
            self.metrics.denied.inc()
            raise ApiError(403, "PermissionDenied", f"{what} needs every capability on /* for every rule type")

    def allowed_paths(
        self, session: Session, capability: Capability, paths: list[str], rule_type: RuleType
    ) -> list[str]:
        decisions = self.engine.decide_batch(session.identity, [(capability, p, rule_type) for p in paths])
        return [p for p, d in zip(paths, decisions, strict=True) if d.allowed]

    async def write(self, check: Callable[[], None], persist: Callable[[], Any], apply: Callable[[], Any]) -> Any:
        """Check against memory, persist in one transaction, apply to the engine; under one lock."""
        async with self._lock:
            check()
            result = await run_in_threadpool(persist)
            try:
                apply()
            except Exception:  # the store has it: rebuild memory from the store rather than diverge
                log.exception("applying a committed change failed; reloading the model from the store")
                self.load()
            return result

    def audited(self, session: Session, event: str, **fields: Any) -> None:
        self.audit.write(event, access_id=session.identity.access_id, caller=_caller(session.identity), **fields)

    # --- login ---------------------------------------------------------------------------------------

    async def auth(self, args: Args, source_ip: str | None) -> dict[str, Any]:
        access_type, access_id = args["access-type"], args["access-id"]
        _claimed_proof.set(None)
        try:
            identity = await self._login(access_type, access_id, args, source_ip)
            am = self.engine.model.by_access_id.get(identity.access_id)
            if am is None:
                raise LoginFailed("unknown_access_id", "the auth method was deleted during the login")
            now = time.time()
            token = new_token()
            stored = StoredToken(token_hash(token), identity.access_id, identity.attributes(), now, now + am.jwt_ttl)
            claimed = _claimed_proof.get()
            proof = None if claimed is None else (claimed[0], claimed[1], now)
            try:
                if not await self._add_token(stored, proof):
                    raise LoginFailed("replay", "this proof was already used (on another node)")
            except NotFound:
                raise LoginFailed("unknown_access_id", "the auth method was deleted during the login") from None
        except LoginFailed as exc:
            self._login_failed(access_id, access_type, exc.reason, str(exc), source_ip)
            raise AuthenticationFailed() from None
        self.tokens.add(stored.token_hash, Session(identity, now, stored.expires_at))
        self.metrics.logins.labels(access_type).inc()
        self.audit.write(
            "login",
            outcome="success",
            access_id=access_id,
            access_type=access_type,
            caller=_caller(identity),
            source_ip=source_ip,
        )
        return {"token": token, "expires-at": int(stored.expires_at)}

    async def _add_token(self, stored: StoredToken, proof: tuple[bytes, float, float] | None) -> bool:
        """The token write (and proof claim) of a login: on the event loop when the store can do it without
        waiting (SQLite, uncontended: about 0.1 ms, a third of a thread hop), else in a worker thread."""
        written = self.store.add_token_now(stored, proof)
        if written is None:
            written = await run_in_threadpool(self.store.add_token, stored, proof)
        return written

    async def _login(self, access_type: str, access_id: str, args: Args, source_ip: str | None) -> Identity:
        am = self.engine.model.by_access_id.get(access_id)
        if am is None:
            raise LoginFailed("unknown_access_id", "no auth method has this access id")
        if access_type != am.type:
            raise LoginFailed("wrong_access_type", f"auth method is {am.type}, login used {access_type}")
        if am.type == ACCESS_KEY:
            key = args.get("access-key")
            if not isinstance(key, str):
                raise LoginFailed("missing_access_key", "no access-key given")
            expected = await run_in_threadpool(self.store.access_key_hash, access_id)
            given = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
            if expected is None or not hmac.compare_digest(given, expected):
                raise LoginFailed("bad_access_key", "access key does not match")
            identity = Identity(
                access_id=access_id, auth_type=ACCESS_KEY, principal_type="access-key", source_ip=source_ip
            )
        else:
            cloud_id = args.get("cloud-id")
            if not isinstance(cloud_id, str):
                raise LoginFailed("missing_cloud_id", "no cloud-id given")
            if not self.sts_urls.allows(am.sts_url or ""):
                raise LoginFailed("sts_url_not_allowed", f"the auth method's STS URL {am.sts_url} is not allowed here")
            attributes = await self.verifier.verify(cloud_id, am.sts_url or "")
            identity = Identity(access_id=access_id, auth_type=AWS_IAM, source_ip=source_ip, **attributes)
        decision = self.engine.authenticate(identity, int(time.time()))
        if not decision.allowed:
            failed = ", ".join(r.rsplit("/", 1)[-1] for r in decision.reasons) or "no permit"
            raise LoginFailed(
                "binding_mismatch", f"auth method refused the identity: {failed}; identity {_caller(identity)}"
            )
        return identity

    def refuse_login_request(self, data: dict[str, Any], problem: str, source_ip: str | None) -> AuthenticationFailed:
        """The answer to a ``/auth`` request refused before any login check (not JSON, too large, a missing,
        unknown or ill-typed flag): the same 401 as every refused login, the problem in the audit log."""
        access_id, access_type = (data.get(k) for k in ("access-id", "access-type"))
        self._login_failed(access_id, access_type, "bad_request", problem, source_ip)
        return AuthenticationFailed()

    def _login_failed(self, access_id: object, access_type: object, reason: str, detail: str, ip: str | None) -> None:
        self.metrics.login_failures.labels(reason).inc()
        self.audit.write(
            "login",
            outcome="failure",
            access_id=self._logged_access_id(access_id),
            access_type=access_type if access_type in (ACCESS_KEY, AWS_IAM) else _short(access_type),
            reason=reason,
            detail=clip(detail, 300),
            source_ip=ip,
        )

    def _logged_access_id(self, value: object) -> str | None:
        """An access id as a refused login's record shows it: as sent when an auth method has it, else only a
        short hash (it may be an access key sent in the wrong field, which a log must never hold)."""
        if not isinstance(value, str):
            return None
        if value in self.engine.model.by_access_id:
            return value
        return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]

    def lookup_sts_url(self, args: Args) -> dict[str, Any]:
        am = self.engine.model.by_access_id.get(args["access-id"])
        if am is None or am.type != AWS_IAM:
            raise ApiError(404, "NotFound", "no aws_iam auth method has this access id")
        return {"sts-url": am.sts_url}

    # --- auth methods --------------------------------------------------------------------------------

    async def create_auth_method(self, session: Session, args: Args, am_type: str) -> dict[str, Any]:
        name = canonical_path(args["name"], "name")
        self.require(session, CREATE, name, AM)
        fields = _am_fields(args)
        am = AuthMethod(name=name, access_id=new_access_id(), type=am_type, **fields)
        self.sts_urls.check(am.sts_url)
        key = new_access_key() if am_type == ACCESS_KEY else None
        key_hash = hashlib.sha256(key.encode()).digest() if key else None

        def check() -> None:
            if name in self.engine.model.auth_methods:
                raise _exists("auth method", name)

        await self.write(
            check, lambda: self.store.add_auth_method(am, key_hash), lambda: self.engine.add_auth_method(am)
        )
        self.audited(session, "create-auth-method", name=name, type=am_type, new_access_id=am.access_id)
        out: dict[str, Any] = {"name": name, "access-id": am.access_id}
        if key:
            out["access-key"] = key
        warning = am.binding_warning()
        if warning:
            out["warning"] = warning
        return out

    async def update_auth_method(self, session: Session, args: Args) -> dict[str, Any]:
        name = canonical_path(args["name"], "name")
        self.require(session, UPDATE, name, AM)
        old = self.engine.model.auth_method(name)
        if old.type != AWS_IAM:
            raise bad_request(f"name: {name} is not an aws_iam auth method")
        fields = _am_fields(args)
        am = replace(old, **fields)

        def check() -> None:
            nonlocal am
            current = self.engine.model.auth_method(name)
            am = replace(current, **fields)  # the fields left out keep their value as of now
            if am.sts_url != current.sts_url:  # what its logins trust: never an ordinary field
                self.require_full_admin(session, "changing an auth method's sts-url")
                self.sts_urls.check(am.sts_url)
            if widened_bindings(current, am):
                self.require(session, CREATE, name, AM)

        await self.write(check, lambda: self.store.update_auth_method(am), lambda: self.engine.update_auth_method(am))
        self.audited(session, "update-auth-method", name=name)
        out: dict[str, Any] = {"name": name, "access-id": am.access_id}
        warning = am.binding_warning()
        if warning:
            out["warning"] = warning
        return out

    def get_auth_method(self, session: Session, args: Args) -> dict[str, Any]:
        name = canonical_path(args["name"], "name")
        self.require(session, READ, name, AM)
        return self.engine.model.auth_method(name).to_dict()

    def list_auth_methods(self, session: Session, args: Args) -> dict[str, Any]:
        names = self.allowed_paths(session, LIST, sorted(self.engine.model.auth_methods), AM)
        ams = self.engine.model.auth_methods
        return {"auth-methods": [ams[n].to_dict() for n in names]}

    async def delete_auth_method(self, session: Session, args: Args) -> dict[str, Any]:
        name = canonical_path(args["name"], "name")
        self.require(session, DELETE, name, AM)
        am = self.engine.model.auth_method(name)
        if name == ADMIN:
            raise _break_glass(f"{ADMIN} is the break-glass auth method: it cannot be deleted")

        def apply() -> None:
            self.engine.delete_auth_method(name)
            self.tokens.drop_access_id(am.access_id)

        await self.write(
            lambda: self.engine.model.auth_method(name), lambda: self.store.delete_auth_method(name), apply
        )
        self.audited(session, "delete-auth-method", name=name)
        return {"name": name, "deleted": True}

    # --- roles ---------------------------------------------------------------------------------------

    async def create_role(self, session: Session, args: Args) -> dict[str, Any]:
        role = AccessRole(args["name"], args.get("description") or "")
        self.require(session, CREATE, role.name, ROLE)

        def check() -> None:
            if role.name in self.engine.model.roles:
                raise _exists("access role", role.name)

        await self.write(
            check,
            lambda: self.store.add_role(role.name, role.description),
            lambda: self.engine.add_role(AccessRole(role.name, role.description)),
        )
        self.audited(session, "create-role", name=role.name)
        return {"name": role.name}

    def get_role(self, session: Session, args: Args) -> dict[str, Any]:
        name = canonical_path(args["name"], "name")
        self.require(session, READ, name, ROLE)
        return self._role_dict(session, self.engine.model.role(name))

    def _role_dict(self, session: Session, role: AccessRole) -> dict[str, Any]:
        """The role; an association shows its auth method's name and access id only to a caller who may read
        that auth method."""
        by_id = self.engine.model.by_access_id
        ams = [by_id.get(a.access_id) for a in role.associations.values()]
        readable = set(self.allowed_paths(session, READ, [am.name for am in ams if am is not None], AM))
        associations = []
        for assoc, am in zip(role.associations.values(), ams, strict=True):
            entry = assoc.to_dict(am.name if am is not None else None)
            if am is None or am.name not in readable:
                entry.update({"access-id": None, "am-name": None})
            associations.append(entry)
        return {
            "name": role.name,
            "description": role.description,
            "associations": associations,
            "rules": [r.to_dict() for r in sorted(role.rules.values(), key=lambda r: (r.rule_type, r.path))],
        }

    def list_roles(self, session: Session, args: Args) -> dict[str, Any]:
        names = self.allowed_paths(session, LIST, sorted(self.engine.model.roles), ROLE)
        return {"roles": [self._role_dict(session, self.engine.model.roles[n]) for n in names]}

    async def delete_role(self, session: Session, args: Args) -> dict[str, Any]:
        name = canonical_path(args["name"], "name")
        self.require(session, DELETE, name, ROLE)
        if name == ADMIN:
            raise _break_glass(f"{ADMIN} is the break-glass role: it cannot be deleted")

        def check() -> None:
            role = self.engine.model.role(name)
            if role.associations:
                self.within_ceiling(session, lift_grants(role, f"deleting {name}"))

        await self.write(check, lambda: self.store.delete_role(name), lambda: self.engine.delete_role(name))
        self.audited(session, "delete-role", name=name)
        return {"name": name, "deleted": True}

    async def assoc_role_am(self, session: Session, args: Args) -> dict[str, Any]:
        role_name = canonical_path(args["role-name"], "role-name")
        am_name = canonical_path(args["am-name"], "am-name")
        sub_claims = parse_sub_claims(args.get("sub-claim") or [])
        self.require(session, UPDATE, role_name, ROLE)
        self.require(session, UPDATE, am_name, AM)  # it changes what the auth method's identities get
        model = self.engine.model
        role, am = model.role(role_name, "role-name"), model.auth_method(am_name, "am-name")
        assoc = Association(new_assoc_id(), role.name, am.access_id, sub_claims)

        def check() -> None:
            current = model.role(role_name, "role-name")
            if model.auth_method(am_name, "am-name").access_id != am.access_id:
                raise errors.no_auth_method(am_name, "am-name")
            for a in current.associations.values():
                if a.access_id == am.access_id and a.sub_claims == sub_claims:
                    raise _exists("association", f"{role_name} -> {am_name}")
            if ADMIN in (role_name, am_name):
                self.require_full_admin(session, f"associating {role_name} with {am_name}")
            self.within_ceiling(session, association_grants(current))

        await self.write(
            check,
            lambda: self.store.add_association(assoc),
            lambda: self.engine.associate(role_name, am_name, sub_claims, assoc.assoc_id),
        )
        self.audited(session, "assoc-role-am", role_name=role_name, am_name=am_name, assoc_id=assoc.assoc_id)
        return {
            "assoc-id": assoc.assoc_id,
            "role-name": role_name,
            "am-name": am_name,
            "sub-claims": {k: list(v) for k, v in sub_claims},
        }

    async def delete_assoc(self, session: Session, args: Args) -> dict[str, Any]:
        model = self.engine.model
        if args.get("assoc-id"):
            assoc = model.association(args["assoc-id"])
        elif args.get("role-name") and args.get("am-name"):
            self.require(session, UPDATE, canonical_path(args["role-name"], "role-name"), ROLE)
            self.require(session, READ, canonical_path(args["am-name"], "am-name"), AM)
            role = model.role(args["role-name"], "role-name")
            am = model.auth_method(args["am-name"], "am-name")
            found = [a for a in role.associations.values() if a.access_id == am.access_id]
            if not found:
                raise ApiError(404, "NotFound", f"{role.name} is not associated with {am.name}")
            if len(found) > 1:
                raise bad_request("assoc-id: several associations match; name one with --assoc-id")
            assoc = found[0]
        else:
            raise bad_request("assoc-id: give --assoc-id, or --role-name with --am-name")
        self.require(session, UPDATE, assoc.role_name, ROLE)
        if assoc.role_name == ADMIN:
            if assoc.access_id == model.break_glass_access_id:
                raise _break_glass(f"the association of the {ADMIN} role with the {ADMIN} auth method is fixed")
            self.require_full_admin(session, f"changing the associations of {ADMIN}")

        def check() -> None:
            model.association(assoc.assoc_id)
            self.within_ceiling(session, lift_grants(model.role(assoc.role_name), "removing the association"))

        await self.write(
            check,
            lambda: self.store.delete_association(assoc.assoc_id),
            lambda: self.engine.delete_association(assoc.assoc_id),
        )
        self.audited(session, "delete-assoc", assoc_id=assoc.assoc_id, role_name=assoc.role_name)
        return {"assoc-id": assoc.assoc_id, "deleted": True}

    async def set_role_rule(self, session: Session, args: Args) -> dict[str, Any]:
        role_name = canonical_path(args["role-name"], "role-name")
        rule = RoleRule.parse(args.get("rule-type") or "item-rule", args["path"], args["capability"])
        self.require(session, UPDATE, role_name, ROLE)
        if role_name == ADMIN:
            raise _break_glass(f"{ADMIN} is the break-glass role: its rules cannot change")

        def check() -> None:
            old = self.engine.model.role(role_name, "role-name").rules.get(rule.key)
            self.within_ceiling(session, rule_grants(role_name, old, rule))

        await self.write(
            check, lambda: self.store.set_rule(role_name, rule), lambda: self.engine.set_rule(role_name, rule)
        )
        self.audited(session, "set-role-rule", role_name=role_name, **rule.to_dict())
        return {"role-name": role_name, **rule.to_dict()}

    async def delete_role_rule(self, session: Session, args: Args) -> dict[str, Any]:
        role_name = canonical_path(args["role-name"], "role-name")
        rule_type = parse_rule_type(args.get("rule-type") or "item-rule")
        rule = RoleRule.parse(rule_type, args["path"], ["read"])
        self.require(session, UPDATE, role_name, ROLE)
        if role_name == ADMIN:
            raise _break_glass(f"{ADMIN} is the break-glass role: its rules cannot change")

        def check() -> None:
            old = self.engine.model.rule(role_name, rule_type, rule.path)
            self.within_ceiling(session, rule_grants(role_name, old, None))

        await self.write(
            check,
            lambda: self.store.delete_rule(role_name, str(rule_type), rule.path),
            lambda: self.engine.delete_rule(role_name, rule_type, rule.path),
        )
        self.audited(session, "delete-role-rule", role_name=role_name, rule_type=str(rule_type), path=rule.path)
        return {"role-name": role_name, "rule-type": str(rule_type), "path": rule.path, "deleted": True}

    # --- items ---------------------------------------------------------------------------------------

    async def create_secret(self, session: Session, args: Args) -> dict[str, Any]:
        name = canonical_path(args["name"], "name")
        self.require(session, CREATE, name, ITEM)
        value = _secret_value(args["value"])
        now = time.time()
        item = StoredItem(name, STATIC_SECRET, b"", b"", now, now, 1, args.get("description") or "", new_item_id())
        nonce, ciphertext = self.box.encrypt(item, value)
        item = replace(item, nonce=nonce, ciphertext=ciphertext)
        async with self._lock:
            await run_in_threadpool(self.store.add_item, item)
        self.audited(session, "create-secret", name=name)
        return {"name": name, "version": 1}

    async def get_secret_value(self, session: Session, args: Args) -> dict[str, Any]:
        name = canonical_path(args["name"], "name")
        self.require(session, READ, name, ITEM)
        item = await run_in_threadpool(self.store.get_item, name)
        try:
            value = self.box.decrypt(item, item.nonce, item.ciphertext, legacy=self.legacy_items)
        except SecretBoxError:
            log.error("item %s cannot be decrypted: wrong master key or corrupted ciphertext", name)
            raise ApiError(503, "ItemUnreadable", f"{name} cannot be decrypted on this server") from None
        self.audited(session, "get-secret-value", name=name, version=item.version)
        return {"name": name, "value": value, "version": item.version}

    async def update_secret_val(self, session: Session, args: Args) -> dict[str, Any]:
        name = canonical_path(args["name"], "name")
        self.require(session, UPDATE, name, ITEM)
        value = _secret_value(args["value"])
        async with self._lock:
            item = await run_in_threadpool(self._store_new_value, name, value)
        self.audited(session, "update-secret-val", name=name, version=item.version)
        return {"name": name, "version": item.version}

    def _store_new_value(self, name: str, value: str) -> StoredItem:
        """Stores ``value`` as the item's next version, encrypted for that version; another node writing the
        same item meanwhile makes it try again (VersionConflict once it lost three times in a row)."""
        lost = 0
        while True:
            current = self.store.get_item(name)
            nonce, ciphertext = self.box.encrypt(replace(current, version=current.version + 1), value)
            try:
                return self.store.update_item(name, ciphertext, nonce, time.time(), version=current.version + 1)
            except VersionConflict:
                lost += 1
                if lost == 3:
                    raise

    def bind_legacy_items(self) -> bool:
        """Re-encrypts, in one transaction, the values stored before they were bound to their item's id and
        version (``secret_box``); True when none is left. Only when every one decrypts: a node with another
        master key must never make the right key's values unreadable."""
        if self.store.get_meta(ITEMS_BOUND_META):
            return True
        items = self.store.list_items()
        rewritten = []
        for item in items:
            try:
                value = self.box.decrypt(item, item.nonce, item.ciphertext, legacy=True)
            except SecretBoxError:
                log.error("item values are not re-encrypted: %s does not decrypt under this master key", item.name)
                return False
            nonce, ciphertext = self.box.encrypt(item, value)
            rewritten.append(replace(item, nonce=nonce, ciphertext=ciphertext))
        with self.store.batch():
            self.store.rewrite_items(rewritten)
            self.store.set_meta(ITEMS_BOUND_META, str(int(time.time())))
        if rewritten:
            log.info("re-encrypted %d item values, bound to their item id and version", len(rewritten))
        return True

    async def delete_item(self, session: Session, args: Args) -> dict[str, Any]:
        name = canonical_path(args["name"], "name")
        self.require(session, DELETE, name, ITEM)
        async with self._lock:
            await run_in_threadpool(self.store.delete_item, name)
        self.audited(session, "delete-item", name=name)
        return {"name": name, "deleted": True}

    async def describe_item(self, session: Session, args: Args) -> dict[str, Any]:
        name = canonical_path(args["name"], "name")
        decisions = self.engine.decide_batch(session.identity, [(READ, name, ITEM), (LIST, name, ITEM)])
        if not any(d.allowed for d in decisions):
            self.metrics.denied.inc()
            raise permission_denied("read or list", name, str(ITEM))
        return _item_dict(await run_in_threadpool(self.store.get_item, name))

    async def list_items(self, session: Session, args: Args) -> dict[str, Any]:
        items = await run_in_threadpool(self.store.list_items)
        prefix = (args.get("path") or "").rstrip("/")
        if prefix:  # a folder: "/dev", "/dev/" and "dev" are the same; "/" is everything
            folder = canonical_path(prefix, "path") + "/"
            items = [i for i in items if i.name.startswith(folder)]
        allowed = set(self.allowed_paths(session, LIST, [i.name for i in items], ITEM))
        visible = [_item_dict(i) for i in items if i.name in allowed]
        folders = sorted({i["item_name"].rsplit("/", 1)[0] + "/" for i in visible})
        return {"items": visible, "folders": folders}

    # --- decisions -----------------------------------------------------------------------------------

    def subject(self, session: Session, args: Args, capability: Capability = READ) -> Session:
        """The session asked about: the caller's own, or ``subject-token``'s if the caller may inspect it
        (``capability``, by default ``read``, on the subject's auth method under auth-method-rule)."""
        subject_token = args.get("subject-token")
        if subject_token is None:
            return session
        subject = self.tokens.check(subject_token, time.time())
        if subject is None:
            raise ApiError(400, "BadRequest", "subject-token: not a live token")
        am = self.engine.model.by_access_id.get(subject.identity.access_id)
        if am is None:
            raise ApiError(400, "BadRequest", "subject-token: its auth method is gone")
        self.require(session, capability, am.name, AM)
        return subject

    def authorize(self, session: Session, args: Args) -> dict[str, Any]:
        subject = self.subject(session, args)
        requests = args["requests"]
        keys = [(r.get("capability"), r.get("path"), r.get("rule-type", "item-rule")) for r in requests]
        try:
            decisions = self.engine.decide_batch(subject.identity, keys)
        except ModelError as exc:
            field = exc.field if exc.field.startswith("requests[") else f"requests[0].{exc.field}"
            raise bad_request(f"{field}: {exc.message}") from None
        out = []
        allowed = 0
        for (capability, path, rule_type), d in zip(keys, decisions, strict=True):
            allowed += d.allowed
            out.append(
                {
                    "path": path if path[0] == "/" else "/" + path,  # valid (decided): canonical but for the /
                    "capability": capability,
                    "rule-type": rule_type,
                    "decision": "allow" if d.allowed else "deny",
                    "reasons": d.reasons,
                }
            )
        if allowed:
            self.metrics.allowed.inc(allowed)
        if len(out) - allowed:
            self.metrics.denied.inc(len(out) - allowed)
        if self.settings.audit_decisions:
            self.audited(session, "authorize", subject=_caller(subject.identity), count=len(out), allowed=allowed)
        return {"decisions": out}

    def explain(self, session: Session, args: Args) -> dict[str, Any]:
        subject = self.subject(session, args)
        capability = parse_capability(args["capability"])
        return self.engine.explain(subject.identity, capability, args["path"], args.get("rule-type") or "item-rule")

    async def revoke_token(self, session: Session, args: Args, own_token: str) -> dict[str, Any]:
        target = own_token
        if args.get("subject-token") is not None:
            self.subject(session, args, UPDATE)  # ending another's session changes its auth method's logins
            target = args["subject-token"]
        digest = token_hash(target)
        await run_in_threadpool(self.store.revoke_token, digest)
        self.tokens.revoke(digest)
        self.audited(session, "revoke-token", own=target is own_token)
        return {"revoked": True}

    def export_policies(self, session: Session, args: Args) -> dict[str, Any]:
        model = self.engine.model
        for names, rule_type in ((sorted(model.roles), ROLE), (sorted(model.auth_methods), AM)):
            if len(self.allowed_paths(session, LIST, names, rule_type)) != len(names):
                raise permission_denied("list", "every object", str(rule_type))
        return {"cedar": self.engine.export_cedar()}


# --- bootstrap -----------------------------------------------------------------------------------------


def bootstrap(store: Store) -> dict[str, str] | None:
    """On an empty store: an admin access-key auth method and an admin role with every capability on every
    path of every rule type. Returns ``{"access_id", "access_key"}`` once; None when already initialized."""
    access_id = new_access_id()
    key = new_access_key()
    am = AuthMethod(name=ADMIN, access_id=access_id, type=ACCESS_KEY)
    every = ["read", "create", "update", "delete", "list"]
    with store.batch():
        if store.get_meta("initialized"):
            return None
        store.add_auth_method(am, hashlib.sha256(key.encode()).digest())
        store.add_role(ADMIN, "administrators: every capability on every path")
        store.add_association(Association(new_assoc_id(), ADMIN, access_id, ()))
        for rule_type in RuleType:
            store.set_rule(ADMIN, RoleRule.parse(rule_type, "/*", every))
        store.set_meta("initialized", str(int(time.time())))
    return {"access_id": access_id, "access_key": key}


# --- small helpers -------------------------------------------------------------------------------------


def _break_glass(message: str) -> ApiError:
    return ApiError(403, "PermissionDenied", message)


def _exists(what: str, name: str) -> ModelError:
    return AlreadyExists("name", f"{what} {shown(name)} already exists")


def _am_fields(args: Args) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for binding in BINDINGS:
        if binding.flag in args:
            fields[binding.field] = args[binding.flag]
    for flag, attr in (
        ("bound-ips", "bound_ips"),
        ("access-expires", "access_expires"),
        ("jwt-ttl", "jwt_ttl"),
        ("sts-url", "sts_url"),
    ):
        if flag in args:
            fields[attr] = args[flag]
    return fields


def _secret_value(value: str) -> str:
    if len(value.encode("utf-8", "surrogatepass")) > MAX_SECRET_BYTES:
        raise bad_request(f"value: larger than {MAX_SECRET_BYTES} bytes")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("value: not valid Unicode text") from None
    return value


def _item_dict(item: StoredItem) -> dict[str, Any]:
    return {
        "item_name": item.name,
        "item_type": "STATIC_SECRET",
        "description": item.description,
        "version": item.version,
        "created_at": int(item.created_at),
        "updated_at": int(item.updated_at),
    }


def _caller(identity: Identity) -> str:
    return identity.arn or f"{identity.principal_type}:{identity.access_id}"


def _short(value: object) -> str | None:
    """A client-sent string for the audit log, quoted and cut short (None when it is not a string)."""
    return shown(value, 40) if isinstance(value, str) else None


Handler = Callable[..., Awaitable[dict[str, Any]] | dict[str, Any]]
