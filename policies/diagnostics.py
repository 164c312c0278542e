"""Diagnostics of rule files: where something was written, and what is wrong with it."""

from __future__ import annotations

from dataclasses import dataclass

from cedarkey.engine import ModelError


@dataclass(frozen=True, order=True)
class Source:
    """Where something was written: a file (relative to the rules directory) and a 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, order=True)
class Diagnostic:
    file: str
    line: int
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        tag = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}: {tag}{self.message}"


class RuleFilesError(ModelError):
    """Rule files with errors: ``diagnostics`` lists them all (``FILE:LINE: message``)."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("", "\n".join(str(d) for d in diagnostics))
