"""cedarkey's engine: the access model, its compilation to Cedar, decisions and explanations.

Pure: no I/O, no HTTP, no database. The server persists the model and replays it into an :class:`Engine`.
"""

from .access_role import AccessRole, Association, parse_sub_claims
from .auth_method import ACCESS_KEY, AWS_IAM, BINDINGS, AuthMethod, new_access_id
from .capability import ACTIONS, Capability, RuleType, parse_capability, parse_rule_type
from .decision import Decision
from .delegation import Ceiling, Grant
from .engine import Engine
from .errors import AlreadyExists, ModelError, NotFound, VersionConflict
from .identity import Identity
from .model import ADMIN
from .path import canonical_path, canonical_pattern
from .role_rule import RoleRule

__all__ = [
    "ACCESS_KEY",
    "ACTIONS",
    "ADMIN",
    "AWS_IAM",
    "BINDINGS",
    "AccessRole",
    "AlreadyExists",
    "Association",
    "AuthMethod",
    "Capability",
    "Ceiling",
    "Decision",
    "Engine",
    "Grant",
    "Identity",
    "ModelError",
    "NotFound",
    "RoleRule",
    "RuleType",
    "VersionConflict",
    "canonical_path",
    "canonical_pattern",
    "new_access_id",
    "parse_capability",
    "parse_rule_type",
    "parse_sub_claims",
]
