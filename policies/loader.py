"""Reading a rules directory: the one place that touches the files (the parsing is pure).

A rules directory holds ``*.toml`` rule files and ``*.cedar`` author policies, in it or in its
subdirectories; names starting with ``.`` (editor swap files, ``.git``) are skipped. Files are named by
their path relative to the directory, with ``/`` separators, in diagnostics and policy sources.
"""

from __future__ import annotations

import os
from pathlib import Path

from cedarkey.engine import Engine

from .diagnostics import RuleFilesError
from .parser import parse_rule_files
from .rule_set import RuleSet

SUFFIXES = (".toml", ".cedar")
MAX_FILE_BYTES = 4 * 1024 * 1024


class RulesDirectoryError(OSError):
    """The directory cannot be read (missing, not a directory, a file that is not UTF-8 or too large)."""


def read_rule_files(directory: str | os.PathLike[str]) -> dict[str, str]:
    """``{relative name: text}`` of every rule file under ``directory``."""
    root = Path(directory)
    if not root.is_dir():
        raise RulesDirectoryError(f"{root}: not a directory")
    files: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if filename.startswith(".") or not filename.endswith(SUFFIXES):
                continue
            path = Path(dirpath) / filename
            name = path.relative_to(root).as_posix()
            try:
                if path.stat().st_size > MAX_FILE_BYTES:
                    raise RulesDirectoryError(f"{name}: larger than {MAX_FILE_BYTES} bytes")
                files[name] = path.read_text(encoding="utf-8")
            except FileNotFoundError:  # removed while we were reading: it is not part of the directory
                continue
            except UnicodeDecodeError:
                raise RulesDirectoryError(f"{name}: not UTF-8 text") from None
            except OSError as exc:
                raise RulesDirectoryError(f"{name}: {exc.strerror or exc}") from None
    return files


def load_rule_set(directory: str | os.PathLike[str], schema_text: str | None = None) -> RuleSet:
    """The parsed and checked rules directory (its ``diagnostics`` say what is wrong; nothing raises but
    :class:`RulesDirectoryError`)."""
    return parse_rule_files(read_rule_files(directory), schema_text)


def load_rules(directory: str | os.PathLike[str], schema_text: str | None = None) -> Engine:
    """An engine serving exactly the rules directory, offline (auth methods get stable offline access ids,
    see :func:`cedarkey.policies.state.offline_access_id`). Raises RuleFilesError listing every error."""
    rule_set = load_rule_set(directory, schema_text)
    if rule_set.errors:
        raise RuleFilesError(rule_set.errors)
    return rule_set.engine()
