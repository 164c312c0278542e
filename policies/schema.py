"""The Cedar schema every policy is validated against, shipped beside the rule files that authors edit."""

from __future__ import annotations

from importlib import resources


def schema_text() -> str:
    """The text of ``policies/schema.cedarschema``."""
    return resources.files("cedarkey.policies").joinpath("schema.cedarschema").read_text(encoding="utf-8")
