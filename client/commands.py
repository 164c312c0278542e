"""Typed calls, one per command: ``client.get_secret_value("/dev/db")``, ``client.authorize([...])``.

Written by ``python -m cedarkey.server.sdk_calls`` from the server's command registry: do not edit by hand.
Each answers the command's JSON object; a refusal raises :class:`cedarkey.client.sdk.ApiError` with the API's
``status`` and ``code`` (e.g. ``PermissionDenied``). An argument left as None is left out of the request.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Commands(ABC):
    """The commands, for a class that supplies :meth:`call` (authenticated) and :meth:`call_anonymous`."""

    @abstractmethod
    def call(self, command: str, body: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """Sends ``command`` with ``body`` and the caller's token; its answer."""

    @abstractmethod
    def call_anonymous(self, command: str, body: dict[str, Any]) -> dict[str, Any]:
        """Sends ``command`` with ``body`` and no token (``auth``, ``lookup-sts-url``); its answer."""

    def apply_model(self, model: str, *, dry_run: int | None = None) -> dict[str, Any]:
        """Make the model what --model says, all or nothing: aws_iam auth methods, roles but /admin, author Cedar (see
        policies/README.md); needs list on everything and the decisions the single commands need."""
        return self.call("apply-model", {"model": model, "dry-run": dry_run})

    def assoc_role_am(self, role_name: str, am_name: str, *, sub_claim: list[str] | None = None) -> dict[str, Any]:
        """Associate an access role with an auth method."""
        return self.call("assoc-role-am", {"role-name": role_name, "am-name": am_name, "sub-claim": sub_claim})

    def auth(
        self,
        access_type: str,
        access_id: str,
        *,
        access_key: str | None = None,
        cloud_id: str | None = None,
    ) -> dict[str, Any]:
        """Log in; answers a token."""
        return self.call_anonymous(
            "auth",
            {
                "access-type": access_type,
                "access-id": access_id,
                "access-key": access_key,
                "cloud-id": cloud_id,
            },
        )

    def authorize(self, requests: list[dict[str, str]], *, subject_token: str | None = None) -> dict[str, Any]:
        """Decisions for other services: may the caller (or --subject-token) do these?"""
        return self.call("authorize", {"requests": requests, "subject-token": subject_token})

    def can(self, identity: str, path: str, capability: str, *, rule_type: str | None = None) -> dict[str, Any]:
        """The decision for an identity (JSON of its attributes) with the policies that made it, and its login (needs
        list on every role and auth method)."""
        return self.call("can", {"identity": identity, "path": path, "capability": capability, "rule-type": rule_type})

    def create_auth_method(
        self,
        name: str,
        *,
        bound_ips: list[str] | None = None,
        access_expires: int | None = None,
        jwt_ttl: int | None = None,
        max_ttl: int | None = None,
    ) -> dict[str, Any]:
        """Create an access-key auth method; its key is shown once."""
        return self.call(
            "create-auth-method",
            {
                "name": name,
                "bound-ips": bound_ips,
                "access-expires": access_expires,
                "jwt-ttl": jwt_ttl,
                "max-ttl": max_ttl,
            },
        )

    def create_auth_method_aws_iam(
        self,
        name: str,
        bound_aws_account_id: list[str],
        *,
        bound_arn: list[str] | None = None,
        bound_role_name: list[str] | None = None,
        bound_role_id: list[str] | None = None,
        bound_resource_id: list[str] | None = None,
        bound_user_name: list[str] | None = None,
        bound_user_id: list[str] | None = None,
        bound_ips: list[str] | None = None,
        access_expires: int | None = None,
        jwt_ttl: int | None = None,
        max_ttl: int | None = None,
        sts_url: str | None = None,
    ) -> dict[str, Any]:
        """Create an AWS IAM auth method."""
        return self.call(
            "create-auth-method-aws-iam",
            {
                "name": name,
                "bound-aws-account-id": bound_aws_account_id,
                "bound-arn": bound_arn,
                "bound-role-name": bound_role_name,
                "bound-role-id": bound_role_id,
                "bound-resource-id": bound_resource_id,
                "bound-user-name": bound_user_name,
                "bound-user-id": bound_user_id,
                "bound-ips": bound_ips,
                "access-expires": access_expires,
                "jwt-ttl": jwt_ttl,
                "max-ttl": max_ttl,
                "sts-url": sts_url,
            },
        )

    def create_role(self, name: str, *, description: str | None = None) -> dict[str, Any]:
        """Create an access role."""
        return self.call("create-role", {"name": name, "description": description})

    def create_secret(
        self,
        name: str,
        value: str,
        *,
        description: str | None = None,
        max_versions: int | None = None,
    ) -> dict[str, Any]:
        """Create a static secret."""
        return self.call(
            "create-secret",
            {
                "name": name,
                "value": value,
                "description": description,
                "max-versions": max_versions,
            },
        )

    def delete_assoc(
        self,
        *,
        assoc_id: str | None = None,
        role_name: str | None = None,
        am_name: str | None = None,
    ) -> dict[str, Any]:
        """Remove an association (by --assoc-id, or --role-name with --am-name)."""
        return self.call("delete-assoc", {"assoc-id": assoc_id, "role-name": role_name, "am-name": am_name})

    def delete_auth_method(self, name: str) -> dict[str, Any]:
        """Delete an auth method, its associations and its tokens."""
        return self.call("delete-auth-method", {"name": name})

    def delete_item(self, name: str, *, version: int | None = None) -> dict[str, Any]:
        """Delete an item, or one earlier version of it."""
        return self.call("delete-item", {"name": name, "version": version})

    def delete_role(self, name: str) -> dict[str, Any]:
        """Delete an access role, its rules and associations."""
        return self.call("delete-role", {"name": name})

    def delete_role_rule(self, role_name: str, path: str, *, rule_type: str | None = None) -> dict[str, Any]:
        """Remove a role's rule on a path."""
        return self.call("delete-role-rule", {"role-name": role_name, "path": path, "rule-type": rule_type})

    def describe_item(self, name: str) -> dict[str, Any]:
        """An item's metadata and versions (never a value)."""
        return self.call("describe-item", {"name": name})

    def explain(
        self,
        path: str,
        capability: str,
        *,
        rule_type: str | None = None,
        subject_token: str | None = None,
    ) -> dict[str, Any]:
        """A decision with the roles and policies behind it."""
        return self.call(
            "explain",
            {
                "path": path,
                "capability": capability,
                "rule-type": rule_type,
                "subject-token": subject_token,
            },
        )

    def export_model(self) -> dict[str, Any]:
        """The access model as JSON: auth methods, roles with associations and rules, author Cedar files (needs list on
        every role and auth method)."""
        return self.call("export-model", {})

    def export_policies(self) -> dict[str, Any]:
        """The compiled Cedar policy set (needs list on every role and auth method)."""
        return self.call("export-policies", {})

    def get_auth_method(self, name: str) -> dict[str, Any]:
        """Show an auth method."""
        return self.call("get-auth-method", {"name": name})

    def get_role(self, name: str) -> dict[str, Any]:
        """Show an access role with its rules and associations."""
        return self.call("get-role", {"name": name})

    def get_secret_value(self, name: str | list[str], *, version: int | None = None) -> dict[str, Any]:
        """The secret's value (or the values of several secrets, by name)."""
        return self.call("get-secret-value", {"name": name, "version": version})

    def list_audit_events(self, *, limit: int | None = None) -> dict[str, Any]:
        """This node's recent audit events, newest first: all of them for a caller that may list every role and auth
        method, otherwise the caller's own."""
        return self.call("list-audit-events", {"limit": limit})

    def list_auth_methods(self) -> dict[str, Any]:
        """Auth methods the caller may list."""
        return self.call("list-auth-methods", {})

    def list_items(self, *, path: str | None = None) -> dict[str, Any]:
        """Items the caller may list."""
        return self.call("list-items", {"path": path})

    def list_roles(self) -> dict[str, Any]:
        """Access roles the caller may list."""
        return self.call("list-roles", {})

    def lookup_sts_url(self, access_id: str) -> dict[str, Any]:
        """The STS URL an aws_iam auth method's login proof must be signed for (nothing else)."""
        return self.call_anonymous("lookup-sts-url", {"access-id": access_id})

    def lookup_token(self) -> dict[str, Any]:
        """The caller's own session: identity attributes, auth method, issue and expiry, roles."""
        return self.call("lookup-token", {})

    def renew_token(self, *, subject_token: str | None = None) -> dict[str, Any]:
        """Extend the caller's live token (or --subject-token) by its auth method's jwt-ttl, up to its max-ttl."""
        return self.call("renew-token", {"subject-token": subject_token})

    def revoke_token(self, *, subject_token: str | None = None) -> dict[str, Any]:
        """Revoke the caller's token, or --subject-token."""
        return self.call("revoke-token", {"subject-token": subject_token})

    def rollback_secret(self, name: str, version: int) -> dict[str, Any]:
        """Make a version's value the new latest version (the latest's own: a copy of it)."""
        return self.call("rollback-secret", {"name": name, "version": version})

    def set_role_rule(
        self,
        role_name: str,
        path: str,
        capability: list[str],
        *,
        rule_type: str | None = None,
    ) -> dict[str, Any]:
        """Give a role capabilities on a path pattern (* wildcard); replaces the rule on that path."""
        return self.call(
            "set-role-rule",
            {
                "role-name": role_name,
                "path": path,
                "capability": capability,
                "rule-type": rule_type,
            },
        )

    def update_auth_method(
        self,
        name: str,
        *,
        bound_ips: list[str] | None = None,
        access_expires: int | None = None,
        jwt_ttl: int | None = None,
        max_ttl: int | None = None,
    ) -> dict[str, Any]:
        """Change the settings every auth method has; flags given replace, flags left out keep their value."""
        return self.call(
            "update-auth-method",
            {
                "name": name,
                "bound-ips": bound_ips,
                "access-expires": access_expires,
                "jwt-ttl": jwt_ttl,
                "max-ttl": max_ttl,
            },
        )

    def update_auth_method_aws_iam(
        self,
        name: str,
        *,
        bound_aws_account_id: list[str] | None = None,
        bound_arn: list[str] | None = None,
        bound_role_name: list[str] | None = None,
        bound_role_id: list[str] | None = None,
        bound_resource_id: list[str] | None = None,
        bound_user_name: list[str] | None = None,
        bound_user_id: list[str] | None = None,
        bound_ips: list[str] | None = None,
        access_expires: int | None = None,
        jwt_ttl: int | None = None,
        max_ttl: int | None = None,
        sts_url: str | None = None,
    ) -> dict[str, Any]:
        """Change an AWS IAM auth method; flags given replace, flags left out keep their value."""
        return self.call(
            "update-auth-method-aws-iam",
            {
                "name": name,
                "bound-aws-account-id": bound_aws_account_id,
                "bound-arn": bound_arn,
                "bound-role-name": bound_role_name,
                "bound-role-id": bound_role_id,
                "bound-resource-id": bound_resource_id,
                "bound-user-name": bound_user_name,
                "bound-user-id": bound_user_id,
                "bound-ips": bound_ips,
                "access-expires": access_expires,
                "jwt-ttl": jwt_ttl,
                "max-ttl": max_ttl,
                "sts-url": sts_url,
            },
        )

    def update_role(self, name: str, description: str) -> dict[str, Any]:
        """Change an access role's description."""
        return self.call("update-role", {"name": name, "description": description})

    def update_secret_val(
        self,
        name: str,
        value: str,
        *,
        keep_prev_version: str | None = None,
        cas: int | None = None,
        max_versions: int | None = None,
    ) -> dict[str, Any]:
        """Replace a secret's value: a new version."""
        return self.call(
            "update-secret-val",
            {
                "name": name,
                "value": value,
                "keep-prev-version": keep_prev_version,
                "cas": cas,
                "max-versions": max_versions,
            },
        )

    def watch(self, *, version: str | None = None, wait: int | None = None) -> dict[str, Any]:
        """The access model's version; with --version, waits (up to --wait seconds) until it is another."""
        return self.call("watch", {"version": version, "wait": wait})

    def who_can(self, path: str, capability: str, *, rule_type: str | None = None) -> dict[str, Any]:
        """Every auth method, association and rule through which some identity gets a capability on a path, and the
        denies that stop it (needs list on every role and auth method)."""
        return self.call("who-can", {"path": path, "capability": capability, "rule-type": rule_type})
