"""The command table: every HTTP command and CLI subcommand, with its flags.

One source of truth for three consumers: the HTTP layer validates request bodies with it (all validation at
the edge: unknown keys, types, required flags), ``/openapi.json`` is generated from it, and the ``cedarkey``
CLI builds its subcommands and ``--help`` from it. A command is ``POST /<name>`` with a JSON object whose keys
are the flag names; list flags (repeatable on the CLI) are JSON lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_STRING = 8192
MAX_LIST = 1000


@dataclass(frozen=True)
class Flag:
    name: str
    kind: str = "str"  # str | list | int | requests | secret
    required: bool = False
    help: str = ""
    default: Any = None


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    flags: tuple[Flag, ...] = ()
    authenticated: bool = True
    answers: dict[str, str] = field(default_factory=dict)

    def flag(self, name: str) -> Flag | None:
        for f in self.flags:
            if f.name == name:
                return f
        return None


_NAME = Flag("name", required=True, help="object path, e.g. /dev/db-password (a leading / is added)")
_AWS_FLAGS = (
    Flag("bound-aws-account-id", "list", help="AWS account ids allowed to log in (at least one)"),
    Flag("bound-arn", "list", help="ARNs allowed (* wildcard); matched against the STS ARN and its IAM ARN"),
    Flag("bound-role-name", "list", help="IAM role names allowed"),
    Flag("bound-role-id", "list", help="IAM role ids allowed (AROA...)"),
    Flag("bound-resource-id", "list", help="resource ids allowed (an EC2 instance id: the session name)"),
    Flag("bound-user-name", "list", help="IAM user names allowed"),
    Flag("bound-user-id", "list", help="IAM user ids allowed (AIDA...)"),
    Flag("sts-url", help="STS endpoint the login proof is signed for (default https://sts.amazonaws.com/)"),
)
_COMMON_AM_FLAGS = (
    Flag("bound-ips", "list", help="CIDRs logins may come from"),
    Flag("access-expires", "int", help="epoch seconds after which nobody can log in (0: never)"),
    Flag("jwt-ttl", "int", help="lifetime of issued tokens, in seconds (default 3600)"),
)
_RULE_TYPE = Flag("rule-type", default="item-rule", help="item-rule | role-rule | auth-method-rule")
_SUBJECT = Flag("subject-token", "secret", help="ask about another caller's token (see README)")

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command(
            "auth",
            "log in; answers a token",
            (
                Flag("access-type", required=True, help="access_key | aws_iam"),
                Flag("access-id", required=True, help="the auth method's access id (p-...)"),
                Flag("access-key", "secret", help="with access_key"),
                Flag("cloud-id", "secret", help="with aws_iam: the signed GetCallerIdentity proof"),
            ),
            authenticated=False,
            answers={"token": "t-...", "expires-at": "epoch seconds"},
        ),
        Command(
            "lookup-sts-url",
            "the STS URL an aws_iam auth method's login proof must be signed for (nothing else)",
            (Flag("access-id", required=True, help="the auth method's access id"),),
            authenticated=False,
            answers={"sts-url": "URL"},
        ),
        Command(
            "create-auth-method-aws-iam",
            "create an AWS IAM auth method",
            (_NAME, *_AWS_FLAGS, *_COMMON_AM_FLAGS),
            answers={"access-id": "p-...", "name": "path"},
        ),
        Command(
            "create-auth-method",
            "create an access-key auth method; its key is shown once",
            (_NAME, *_COMMON_AM_FLAGS),
            answers={"access-id": "p-...", "access-key": "shown once"},
        ),
        Command(
            "update-auth-method-aws-iam",
            "change an AWS IAM auth method; flags given replace, flags left out keep their value",
            (_NAME, *_AWS_FLAGS, *_COMMON_AM_FLAGS),
        ),
        Command("get-auth-method", "show an auth method", (_NAME,)),
        Command("list-auth-methods", "auth methods the caller may list"),
        Command("delete-auth-method", "delete an auth method, its associations and its tokens", (_NAME,)),
        Command(
            "create-role",
            "create an access role",
            (_NAME, Flag("description", help="free text")),
        ),
        Command("get-role", "show an access role with its rules and associations", (_NAME,)),
        Command("list-roles", "access roles the caller may list"),
        Command("delete-role", "delete an access role, its rules and associations", (_NAME,)),
        Command(
            "assoc-role-am",
            "associate an access role with an auth method",
            (
                Flag("role-name", required=True),
                Flag("am-name", required=True),
                Flag("sub-claim", "list", help="attribute=pattern the identity must match, e.g. role_name=dev-*"),
            ),
            answers={"assoc-id": "ac-..."},
        ),
        Command(
            "delete-assoc",
            "remove an association (by --assoc-id, or --role-name with --am-name)",
            (Flag("assoc-id"), Flag("role-name"), Flag("am-name")),
        ),
        Command(
            "set-role-rule",
            "give a role capabilities on a path pattern (* wildcard); replaces the rule on that path",
            (
                Flag("role-name", required=True),
                Flag("path", required=True, help="path pattern, e.g. /dev/*"),
                Flag("capability", "list", required=True, help="read create update delete list | deny"),
                _RULE_TYPE,
            ),
        ),
        Command(
            "delete-role-rule",
            "remove a role's rule on a path",
            (Flag("role-name", required=True), Flag("path", required=True), _RULE_TYPE),
        ),
        Command(
            "create-secret",
            "create a static secret",
            (_NAME, Flag("value", "secret", required=True), Flag("description")),
        ),
        Command("get-secret-value", "the secret's value", (_NAME,)),
        Command("update-secret-val", "replace a secret's value", (_NAME, Flag("value", "secret", required=True))),
        Command("delete-item", "delete an item", (_NAME,)),
        Command("describe-item", "an item's metadata (never its value)", (_NAME,)),
        Command("list-items", "items the caller may list", (Flag("path", help="only items under this folder"),)),
        Command(
            "authorize",
            "decisions for other services: may the caller (or --subject-token) do these?",
            (
                Flag("requests", "requests", required=True, help="1 to 1000 {path, capability, rule-type}"),
                _SUBJECT,
            ),
            answers={"decisions": "[{path, capability, rule-type, decision, reasons}]"},
        ),
        Command(
            "explain",
            "a decision with the roles and policies behind it",
            (
                Flag("path", required=True),
                Flag("capability", required=True),
                _RULE_TYPE,
                _SUBJECT,
            ),
        ),
        Command("revoke-token", "revoke the caller's token, or --subject-token", (_SUBJECT,)),
        Command("export-policies", "the compiled Cedar policy set (needs list on every role and auth method)"),
        Command(
            "export-model",
            "the access model as JSON: auth methods, roles with associations and rules, author Cedar files "
            "(needs list on every role and auth method)",
            answers={"auth-methods": "[...]", "roles": "[...]", "cedar": "{file: text}"},
        ),
        Command(
            "apply-model",
            "make the model what --model says, all or nothing: aws_iam auth methods, roles but /admin, author "
            "Cedar (see policies/README.md); needs list on everything and the decisions the single commands need",
            (
                Flag("model", "secret", required=True, help="the desired model, in export-model's JSON (a string)"),
                Flag("dry-run", "int", help="1: answer the plan only, change nothing"),
            ),
            answers={"plan": "{changes, summary, text}", "applied": "true|false", "created": "{name: access id}"},
        ),
        Command(
            "who-can",
            "every auth method, association and rule through which some identity gets a capability on a path, "
            "and the denies that stop it (needs list on every role and auth method)",
            (Flag("path", required=True), Flag("capability", required=True), _RULE_TYPE),
        ),
        Command(
            "can",
            "the decision for an identity (JSON of its attributes) with the policies that made it, and its login "
            "(needs list on every role and auth method)",
            (
                Flag("identity", required=True, help='JSON attributes, e.g. {"auth_method": "iamAuth1", ...}'),
                Flag("path", required=True),
                Flag("capability", required=True),
                _RULE_TYPE,
            ),
        ),
    )
}
