"""The Cedar schema and the rule files that policy authors edit, shipped with the package."""

from __future__ import annotations

from importlib import resources


def schema_text() -> str:
    """The text of ``policies/schema.cedarschema``."""
    return resources.files(__name__).joinpath("schema.cedarschema").read_text(encoding="utf-8")
