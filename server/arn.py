"""Strict parsing of the caller ARN that ``sts:GetCallerIdentity`` answers, into identity attributes.

Only the shapes GetCallerIdentity can return are accepted, in the partitions ``aws``, ``aws-cn`` and
``aws-us-gov``; anything else (another partition, service or resource type, a stray character, a missing
or extra path segment) raises :class:`ArnError`. Names use IAM's character set (``[A-Za-z0-9+=,.@_-]``),
paths the same plus ``/``, so an attribute never carries a ``*``, ``?``, ``:`` or whitespace that a
wildcard binding could misread.

Note: an assumed-role ARN from STS does not carry the role's IAM path
(``arn:aws:sts::111122223333:assumed-role/ROLE/SESSION`` for a role at ``/team/ROLE``), so ``iam_arn`` of an
assumed role is always the path-less ``arn:aws:iam::111122223333:role/ROLE``. Bindings on ``iam_arn`` of
roles with a path must be written without the path (or with a wildcard).
"""

from __future__ import annotations

import re

PARTITIONS = ("aws", "aws-cn", "aws-us-gov")

_NAME = r"[A-Za-z0-9+=,.@_-]"
_PATH = r"/(?:[A-Za-z0-9+=,.@_-]+/){0,32}"

_ASSUMED_ROLE = re.compile(
    rf"arn:(?P<p>[a-z-]+):sts::(?P<a>\d{{12}}):assumed-role/(?P<role>{_NAME}{{1,64}})/(?P<session>{_NAME}{{2,64}})"
)
_USER = re.compile(rf"arn:(?P<p>[a-z-]+):iam::(?P<a>\d{{12}}):user(?P<path>{_PATH})(?P<name>{_NAME}{{1,64}})")
_ROLE = re.compile(rf"arn:(?P<p>[a-z-]+):iam::(?P<a>\d{{12}}):role(?P<path>{_PATH})(?P<name>{_NAME}{{1,64}})")
_FEDERATED = re.compile(rf"arn:(?P<p>[a-z-]+):sts::(?P<a>\d{{12}}):federated-user/(?P<name>{_NAME}{{2,64}})")
_ROOT = re.compile(r"arn:(?P<p>[a-z-]+):iam::(?P<a>\d{12}):root")

_ACCOUNT = re.compile(r"\d{12}")
# AWS unique ids are upper-case alphanumerics (AIDA..., AROA...); moto issues lower-case ones for users.
_UNIQUE_ID = re.compile(r"[A-Za-z0-9]{1,128}")
_ROLE_USER_ID = re.compile(rf"(?P<id>[A-Za-z0-9]{{1,128}}):(?P<session>{_NAME}{{2,64}})")

MAX_ARN_LENGTH = 2048


class ArnError(ValueError):
    """An ARN or user id that does not have one of the accepted shapes. ``reason`` is for the audit log."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_caller(arn: str, user_id: str, account: str) -> dict[str, str]:
    """Identity attributes from GetCallerIdentity's ``Arn``, ``UserId`` and ``Account``.

    Returns ``account``, ``arn``, ``principal_type`` and whichever of ``iam_arn``, ``role_name``,
    ``role_id``, ``session_name``, ``resource_id``, ``user_name``, ``user_id``, ``federated_name`` apply to
    the shape.
    """
    if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
        raise ArnError("bad_account", "the account is not a 12-digit AWS account id")
    if not isinstance(arn, str) or len(arn) > MAX_ARN_LENGTH or not arn.isascii():
        raise ArnError("bad_arn", "the ARN is not a short ASCII string")
    if not isinstance(user_id, str) or len(user_id) > 256:
        raise ArnError("bad_user_id", "the user id is not a short string")

    attrs: dict[str, str]
    if m := _ASSUMED_ROLE.fullmatch(arn):
        ids = _ROLE_USER_ID.fullmatch(user_id)
        if ids is None or ids["session"] != m["session"]:
            raise ArnError("bad_user_id", "an assumed role's user id must be ROLE_ID:SESSION_NAME")
        attrs = {
            "principal_type": "assumed-role",
            "iam_arn": f"arn:{m['p']}:iam::{m['a']}:role/{m['role']}",
            "role_name": m["role"],
            "role_id": ids["id"],
            "session_name": m["session"],
            "resource_id": m["session"],
        }
    elif m := _USER.fullmatch(arn):
        _check_unique_id(user_id)
        attrs = {"principal_type": "user", "iam_arn": arn, "user_name": m["name"], "user_id": user_id}
    elif m := _ROLE.fullmatch(arn):
        _check_unique_id(user_id)
        attrs = {"principal_type": "role", "iam_arn": arn, "role_name": m["name"], "role_id": user_id}
    elif m := _FEDERATED.fullmatch(arn):
        if user_id != f"{m['a']}:{m['name']}":
            raise ArnError("bad_user_id", "a federated user's user id must be ACCOUNT:NAME")
        # The caller of GetFederationToken picks this name freely: never an IAM user's name attribute.
        attrs = {"principal_type": "federated-user", "federated_name": m["name"]}
    elif m := _ROOT.fullmatch(arn):
        if user_id != m["a"]:
            raise ArnError("bad_user_id", "the root user's user id must be the account id")
        attrs = {"principal_type": "root", "iam_arn": arn}
    else:
        raise ArnError("bad_arn", "the ARN is not an assumed role, IAM user, IAM role, federated user or root")

    if m["p"] not in PARTITIONS:
        raise ArnError("bad_arn", f"partition {m['p']!r} is not one of {', '.join(PARTITIONS)}")
    if m["a"] != account:
        raise ArnError("account_mismatch", "the ARN's account is not the answer's account")
    return {"account": account, "arn": arn, **attrs}


def _check_unique_id(user_id: str) -> None:
    if not _UNIQUE_ID.fullmatch(user_id):
        raise ArnError("bad_user_id", "the user id is not an AWS unique id")
