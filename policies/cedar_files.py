"""Author Cedar files: their statements and lines, and their check against the schema."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cedarkey.engine import cedar, compile

from .diagnostics import Diagnostic


def cedar_statements(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each top-level statement (policy) of Cedar text: the spans between ``;``."""
    spans: list[tuple[int, int]] = []
    i, n, start = 0, len(text), None
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        if text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if start is None:
            start = i
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
        elif c == ";":
            spans.append((start, i + 1))
            start = None
            i += 1
        else:
            i += 1
    if start is not None:
        spans.append((start, n))
    return spans


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def author_policy_id(source: str, local: str) -> str:
    """The id the engine gives an author policy (see :meth:`Engine.set_author_policies`)."""
    return f"file:{compile.quote(source)}/{local}"


@dataclass
class CedarFile:
    name: str
    text: str
    #: policy id (as the engine names it) -> line of the policy's first token
    lines: dict[str, int] = field(default_factory=dict)


def check_cedar(name: str, text: str, schema: Any, out: list[Diagnostic]) -> CedarFile:
    spans = cedar_statements(text)
    starts = [_line_of(text, s) for s, _ in spans]
    result = CedarFile(name, text)
    try:
        policies = cedar.to_json(text)
    except ValueError as exc:
        for (s, e), line in zip(spans, starts, strict=True):
            try:
                cedar.to_json(text[s:e])
            except ValueError as inner:
                out.append(Diagnostic(name, line, f"not valid Cedar: {inner}"))
                break
        else:
            out.append(Diagnostic(name, starts[-1] if starts else 1, f"not valid Cedar: {exc}"))
        return result
    compiled: dict[str, dict[str, Any]] = {}
    for n, policy in enumerate(policies.values()):
        line = starts[n] if n < len(starts) else 1
        local = (policy.get("annotations") or {}).get("id") or str(n)
        pid = author_policy_id(name, local)
        if pid in compiled:
            out.append(Diagnostic(name, line, f"duplicate policy id {local!r}"))
            continue
        policy = {**policy, "annotations": {**(policy.get("annotations") or {}), "id": pid}}
        compiled[pid] = policy
        result.lines[pid] = line
    for error in cedar.validate(compiled, schema):
        pid = next((p for p in compiled if error.startswith(p + ": ")), "")
        message = re.sub(r"^for policy `[^`]*`, ", "", error[len(pid) + 2 :] if pid else error)
        out.append(Diagnostic(name, result.lines.get(pid, 1), f"fails the schema: {message.strip()}"))
    return result
