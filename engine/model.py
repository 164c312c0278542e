"""The access model: auth methods, access roles, their associations and rules, held in memory.

Every mutation validates everything first and changes nothing when it refuses, so a caller can check a
change here, persist it, and apply it knowing the apply cannot fail halfway. The model knows nothing of
Cedar; :class:`cedarkey.engine.Engine` compiles it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from . import errors
from .access_role import AccessRole, Association, SubClaims, new_assoc_id
from .auth_method import ACCESS_KEY, AuthMethod
from .capability import RuleType
from .errors import ModelError
from .path import canonical_path, canonical_pattern
from .role_rule import RoleRule

T = TypeVar("T")

#: The break-glass name: the first start creates an access_key auth method and a role of this name, the
#: role holding every capability on ``/*`` for every rule type. No deny rule of another role and no author
#: policy applies to identities of that auth method, so no change made through the API can lock it out.
ADMIN = "/admin"


class Model:
    def __init__(self) -> None:
        self.auth_methods: dict[str, AuthMethod] = {}
        self.by_access_id: dict[str, AuthMethod] = {}
        self.roles: dict[str, AccessRole] = {}
        self.associations: dict[str, Association] = {}
        # access id -> names of the roles associated with that auth method
        self.roles_by_access_id: dict[str, set[str]] = {}

    # --- lookups ---------------------------------------------------------------------------------------

    def auth_method(self, name: object, field: str = "name") -> AuthMethod:
        return _named(self.auth_methods, name, field, errors.no_auth_method)

    def role(self, name: object, field: str = "name") -> AccessRole:
        return _named(self.roles, name, field, errors.no_role)

    def association(self, assoc_id: object) -> Association:
        if not isinstance(assoc_id, str) or assoc_id not in self.associations:
            raise errors.no_association(assoc_id)
        return self.associations[assoc_id]

    @property
    def break_glass_access_id(self) -> str | None:
        """The access id of the ``/admin`` access_key auth method (None before the first start made it)."""
        am = self.auth_methods.get(ADMIN)
        return am.access_id if am is not None and am.type == ACCESS_KEY else None

    def rules(self) -> Iterator[tuple[AccessRole, RoleRule]]:
        for role in self.roles.values():
            for rule in role.rules.values():
                yield role, rule

    # --- auth methods ----------------------------------------------------------------------------------

    def add_auth_method(self, am: AuthMethod) -> None:
        if am.name in self.auth_methods:
            raise errors.auth_method_exists(am.name)
        if am.access_id in self.by_access_id:
            raise errors.access_id_taken()
        self.auth_methods[am.name] = am
        self.by_access_id[am.access_id] = am

    def update_auth_method(self, am: AuthMethod) -> AuthMethod:
        old = self.auth_method(am.name)
        if old.access_id != am.access_id or old.type != am.type:
            raise errors.keeps_identity()
        self.auth_methods[am.name] = am
        self.by_access_id[am.access_id] = am
        return old

    def delete_auth_method(self, name: object) -> tuple[AuthMethod, list[Association]]:
        """Removes the auth method and every association to it (its tokens die with it in the server)."""
        am = self.auth_method(name)
        gone = [a for a in self.associations.values() if a.access_id == am.access_id]
        for assoc in gone:
            self._drop_association(assoc)
        del self.auth_methods[am.name]
        del self.by_access_id[am.access_id]
        self.roles_by_access_id.pop(am.access_id, None)
        return am, gone

    # --- roles -----------------------------------------------------------------------------------------

    def add_role(self, role: AccessRole) -> None:
        if role.name in self.roles:
            raise errors.role_exists(role.name)
        if role.associations or role.rules:
            raise ModelError("name", "a new role starts with no associations and no rules")
        self.roles[role.name] = role

    def delete_role(self, name: object) -> AccessRole:
        role = self.role(name)
        for assoc in list(role.associations.values()):
            self._drop_association(assoc)
        del self.roles[role.name]
        return role

    def associate(
        self, role_name: object, am_name: object, sub_claims: SubClaims = (), assoc_id: str | None = None
    ) -> Association:
        role = self.role(role_name, "role-name")
        am = self.auth_method(am_name, "am-name")
        for existing in role.associations.values():
            if existing.access_id == am.access_id and existing.sub_claims == sub_claims:
                raise errors.already_associated()
        assoc_id = assoc_id or new_assoc_id()
        if assoc_id in self.associations:
            raise errors.assoc_id_taken()
        assoc = Association(assoc_id, role.name, am.access_id, sub_claims)
        role.associations[assoc_id] = assoc
        self.associations[assoc_id] = assoc
        self.roles_by_access_id.setdefault(am.access_id, set()).add(role.name)
        return assoc

    def delete_association(self, assoc_id: object) -> Association:
        assoc = self.association(assoc_id)
        self._drop_association(assoc)
        return assoc

    def _drop_association(self, assoc: Association) -> None:
        role = self.roles[assoc.role_name]
        del role.associations[assoc.assoc_id]
        del self.associations[assoc.assoc_id]
        if not any(a.access_id == assoc.access_id for a in role.associations.values()):
            names = self.roles_by_access_id.get(assoc.access_id)
            if names is not None:
                names.discard(role.name)
                if not names:
                    del self.roles_by_access_id[assoc.access_id]

    # --- rules -----------------------------------------------------------------------------------------

    def set_rule(self, role_name: object, rule: RoleRule) -> RoleRule | None:
        """Sets a rule; a rule already on that path for that rule type has its capabilities replaced."""
        role = self.role(role_name, "role-name")
        old = role.rules.get(rule.key)
        role.rules[rule.key] = rule
        return old

    def rule(self, role_name: object, rule_type: RuleType, path: object) -> RoleRule:
        """The role's rule of ``rule_type`` on ``path``; NotFound(``path``) when it has none."""
        role = self.role(role_name, "role-name")
        pattern = canonical_pattern(path)
        found = role.rules.get((rule_type, pattern))
        if found is None:
            raise errors.no_rule(role.name, rule_type, pattern)
        return found

    def delete_rule(self, role_name: object, rule_type: RuleType, path: object) -> RoleRule:
        rule = self.rule(role_name, rule_type, path)
        return self.roles[canonical_path(role_name, "role-name")].rules.pop(rule.key)


def _named(table: dict[str, T], name: object, field: str, missing: Callable[[str, str], ModelError]) -> T:
    """The object of ``table`` that ``name`` (canonicalised) names; ``missing(path, field)`` when none."""
    path = canonical_path(name, field)
    found = table.get(path)
    if found is None:
        raise missing(path, field)
    return found
