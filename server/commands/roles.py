"""Access roles: create, get, list, delete; their associations with auth methods, and their rules.

What a change grants must be within what the caller holds (``cedarkey.engine.delegation``), checked under the
write lock against the model of that moment; the ``/admin`` role is the break glass (see the README).
"""

from __future__ import annotations

from dataclasses import replace

from cedarkey.engine import ADMIN, AccessRole, Association, Capability, RoleRule, RuleType, errors, parse_sub_claims
from cedarkey.engine.access_role import MAX_SUB_CLAIMS, new_assoc_id
from cedarkey.engine.delegation import association_grants, lift_grants, rule_grants
from cedarkey.engine.grammar import ASSOC_ID, sub_claim
from cedarkey.engine.identity import CLAIM_ATTRIBUTES

from ..errors import ApiError, protected
from ..tokens import Session
from .command import (
    AM_NAME,
    DESCRIPTION,
    NAME,
    ROLE_NAME,
    RULE_CAPABILITIES,
    RULE_TYPE,
    Answer,
    Call,
    Flag,
    Need,
    command,
)

READ, CREATE, UPDATE, DELETE, LIST = (Capability(c) for c in ("read", "create", "update", "delete", "list"))
ROLE, AM = RuleType.ROLE, RuleType.AUTH_METHOD

_FIXED_RULES = f"{ADMIN} is the break-glass role: its rules cannot change"


@command(
    "create-role",
    "create an access role",
    NAME,
    DESCRIPTION,
    needs=(Need((CREATE,), ROLE),),
)
async def create_role(call: Call) -> Answer:
    service = call.service
    role = AccessRole(call.args["name"], call.args.get("description") or "")

    def check() -> None:
        if role.name in service.engine.model.roles:
            raise errors.role_exists(role.name)

    await service.write(
        check,
        lambda: service.store.add_role(role.name, role.description),
        lambda: service.engine.add_role(AccessRole(role.name, role.description)),
        service.event(call.caller, "create-role", name=role.name),
    )
    return {"name": role.name}


@command(
    "update-role",
    "change an access role's description",
    NAME,
    replace(DESCRIPTION, required=True),
    needs=(Need((UPDATE,), ROLE),),
)
async def update_role(call: Call) -> Answer:
    service, name = call.service, call.args["name"]
    description = AccessRole(name, call.args["description"]).description  # checked as a new role's is

    def apply() -> None:
        service.engine.model.role(name).description = description

    await service.write(
        lambda: service.engine.model.role(name),
        lambda: service.store.update_role(name, description),
        apply,
        service.event(call.caller, "update-role", name=name),
    )
    return {"name": name, "description": description}


@command("get-role", "show an access role with its rules and associations", NAME, needs=(Need((READ,), ROLE),))
def get_role(call: Call) -> Answer:
    return _role_dict(call, call.service.engine.model.role(call.args["name"]))


@command("list-roles", "access roles the caller may list")
def list_roles(call: Call) -> Answer:
    roles = call.service.engine.model.roles
    names = call.service.allowed_paths(call.caller, LIST, sorted(roles), ROLE)
    return {"roles": [_role_dict(call, roles[n]) for n in names]}


@command(
    "delete-role",
    "delete an access role, its rules and associations",
    NAME,
    needs=(Need((DELETE,), ROLE),),
)
async def delete_role(call: Call) -> Answer:
    service, name, session = call.service, call.args["name"], call.caller
    if name == ADMIN:
        raise protected(f"{ADMIN} is the break-glass role: it cannot be deleted")

    def check() -> None:
        role = service.engine.model.role(name)
        if role.associations:
            service.within_ceiling(session, lift_grants(role, f"deleting {name}"))

    await service.write(
        check,
        lambda: service.store.delete_role(name),
        lambda: service.engine.delete_role(name),
        service.event(session, "delete-role", name=name),
    )
    return {"name": name, "deleted": True}


@command(
    "assoc-role-am",
    "associate an access role with an auth method",
    ROLE_NAME,
    AM_NAME,
    Flag(
        "sub-claim",
        "list",
        help="attribute=pattern the identity must match, e.g. role_name=dev-*",
        pattern=sub_claim(CLAIM_ATTRIBUTES),
        what="attribute=pattern with a known attribute and a pattern of 1 to 256 printable characters",
        max_items=MAX_SUB_CLAIMS,
        example=["role_name=dev-*"],
    ),
    # Associating changes what the auth method's identities get, as much as what the role hands out.
    needs=(Need((UPDATE,), ROLE, of="role-name"), Need((UPDATE,), AM, of="am-name")),
)
async def assoc_role_am(call: Call) -> Answer:
    service, session = call.service, call.caller
    role_name, am_name = call.args["role-name"], call.args["am-name"]
    sub_claims = parse_sub_claims(call.args.get("sub-claim") or [])
    model = service.engine.model
    role, am = model.role(role_name, "role-name"), model.auth_method(am_name, "am-name")
    assoc = Association(new_assoc_id(), role.name, am.access_id, sub_claims)

    def check() -> None:
        current = model.role(role_name, "role-name")
        if model.auth_method(am_name, "am-name").access_id != am.access_id:
            raise errors.no_auth_method(am_name, "am-name")
        if any(a.access_id == am.access_id and a.sub_claims == sub_claims for a in current.associations.values()):
            raise errors.already_associated()
        if ADMIN in (role_name, am_name):
            service.require_full_admin(session, f"associating {role_name} with {am_name}")
        service.within_ceiling(session, association_grants(current))

    await service.write(
        check,
        lambda: service.store.add_association(assoc),
        lambda: service.engine.associate(role_name, am_name, sub_claims, assoc.assoc_id),
        service.event(session, "assoc-role-am", role_name=role_name, am_name=am_name, assoc_id=assoc.assoc_id),
    )
    return {
        "assoc-id": assoc.assoc_id,
        "role-name": role_name,
        "am-name": am_name,
        "sub-claims": {k: list(v) for k, v in sub_claims},
    }


def _assoc_role(call: Call) -> str | None:
    """The role whose association ``delete-assoc`` removes: named, or the one of the association named."""
    if call.args.get("role-name"):
        return call.args["role-name"]
    if call.args.get("assoc-id"):
        return call.service.engine.model.association(call.args["assoc-id"]).role_name
    return None


@command(
    "delete-assoc",
    "remove an association (by --assoc-id, or --role-name with --am-name)",
    Flag("assoc-id", pattern=ASSOC_ID, what="an association id (ac-...)", example="ac-0123456789abcdef"),
    replace(ROLE_NAME, required=False),
    replace(AM_NAME, required=False),
    needs=(Need((UPDATE,), ROLE, of="role-name", path=_assoc_role), Need((READ,), AM, of="am-name")),
    one_of=(("assoc-id",), ("role-name", "am-name")),
)
async def delete_assoc(call: Call) -> Answer:
    service, session, args = call.service, call.caller, call.args
    model = service.engine.model
    if args.get("assoc-id"):
        assoc = model.association(args["assoc-id"])
    else:  # the command's one_of: both names
        role = model.role(args["role-name"], "role-name")
        am = model.auth_method(args["am-name"], "am-name")
        found = [a for a in role.associations.values() if a.access_id == am.access_id]
        if not found:
            raise ApiError(404, "NotFound", f"{role.name} is not associated with {am.name}")
        if len(found) > 1:
            raise ApiError(409, "Ambiguous", "assoc-id: several associations match; name one with --assoc-id")
        assoc = found[0]
    if assoc.role_name == ADMIN:
        if assoc.access_id == model.break_glass_access_id:
            raise protected(f"the association of the {ADMIN} role with the {ADMIN} auth method is fixed")
        service.require_full_admin(session, f"changing the associations of {ADMIN}")

    def check() -> None:
        model.association(assoc.assoc_id)
        service.within_ceiling(session, lift_grants(model.role(assoc.role_name), "removing the association"))

    await service.write(
        check,
        lambda: service.store.delete_association(assoc.assoc_id),
        lambda: service.engine.delete_association(assoc.assoc_id),
        service.event(session, "delete-assoc", assoc_id=assoc.assoc_id, role_name=assoc.role_name),
    )
    return {"assoc-id": assoc.assoc_id, "deleted": True}


@command(
    "set-role-rule",
    "give a role capabilities on a path pattern (* wildcard); replaces the rule on that path",
    ROLE_NAME,
    Flag("path", required=True, help="path pattern, e.g. /dev/*", path="pattern"),
    Flag(
        "capability",
        "list",
        required=True,
        help="read create update delete list | deny",
        choices=tuple(Capability),
        schema=RULE_CAPABILITIES,
        example=["read", "list"],
    ),
    RULE_TYPE,
    needs=(Need((UPDATE,), ROLE, of="role-name"),),
)
async def set_role_rule(call: Call) -> Answer:
    service, session, role_name = call.service, call.caller, call.args["role-name"]
    rule = RoleRule.parse(call.args["rule-type"], call.args["path"], call.args["capability"])
    if role_name == ADMIN:
        raise protected(_FIXED_RULES)

    def check() -> None:
        old = service.engine.model.role(role_name, "role-name").rules.get(rule.key)
        service.within_ceiling(session, rule_grants(role_name, old, rule))

    await service.write(
        check,
        lambda: service.store.set_rule(role_name, rule),
        lambda: service.engine.set_rule(role_name, rule),
        service.event(session, "set-role-rule", role_name=role_name, **rule.to_dict()),
    )
    return {"role-name": role_name, **rule.to_dict()}


@command(
    "delete-role-rule",
    "remove a role's rule on a path",
    ROLE_NAME,
    Flag("path", required=True, path="pattern"),
    RULE_TYPE,
    needs=(Need((UPDATE,), ROLE, of="role-name"),),
)
async def delete_role_rule(call: Call) -> Answer:
    service, session, role_name = call.service, call.caller, call.args["role-name"]
    rule_type, path = RuleType(call.args["rule-type"]), call.args["path"]
    if role_name == ADMIN:
        raise protected(_FIXED_RULES)

    def check() -> None:
        old = service.engine.model.rule(role_name, rule_type, path)
        service.within_ceiling(session, rule_grants(role_name, old, None))

    await service.write(
        check,
        lambda: service.store.delete_rule(role_name, str(rule_type), path),
        lambda: service.engine.delete_rule(role_name, rule_type, path),
        service.event(session, "delete-role-rule", role_name=role_name, rule_type=str(rule_type), path=path),
    )
    return {"role-name": role_name, "rule-type": str(rule_type), "path": path, "deleted": True}


def _role_dict(call: Call, role: AccessRole) -> Answer:
    """The role; an association shows its auth method's name and access id only to a caller who may read
    that auth method."""
    session: Session = call.caller
    by_id = call.service.engine.model.by_access_id
    ams = [by_id.get(a.access_id) for a in role.associations.values()]
    readable = set(call.service.allowed_paths(session, READ, [am.name for am in ams if am is not None], AM))
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
