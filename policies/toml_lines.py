"""Where things are in a TOML text: ``tomllib`` gives values without lines, so diagnostics find them here."""

from __future__ import annotations

import bisect
import re
import tomllib

BARE = re.compile(r"[A-Za-z0-9_-]+")
Key = tuple[str | int, ...]


class TomlLines:
    """The line of every key and array element of a TOML text (tomllib keeps none).

    Keys are paths as tomllib's dicts nest them: ``("role", "dev-readers", "rule", 0, "path")``; an array of
    tables element and an inline array element are both an integer index. Runs only on text tomllib accepted.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.lines: dict[Key, int] = {}
        self._newlines = [m.start() for m in re.finditer("\n", text)]
        self._aot: dict[Key, int] = {}
        try:
            self._document()
        except (IndexError, ValueError, tomllib.TOMLDecodeError):  # pragma: no cover - best effort
            pass

    def line(self, key: Key) -> int:
        """The line of ``key``, else of its nearest recorded ancestor, else 1."""
        for n in range(len(key), 0, -1):
            found = self.lines.get(key[:n])
            if found is not None:
                return found
        return 1

    def _line_at(self, index: int) -> int:
        return bisect.bisect_left(self._newlines, index) + 1

    def _record(self, key: Key, start: int | None = None) -> None:
        """Records ``key`` and its implicit parents (a header or dotted key defines them) at ``start``."""
        line = self._line_at(self.i if start is None else start)
        for n in range(1, len(key) + 1):
            self.lines.setdefault(key[:n], line)

    def _skip(self, newlines: bool) -> None:
        t = self.text
        while self.i < len(t):
            c = t[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            elif c == "#":
                end = t.find("\n", self.i)
                self.i = len(t) if end < 0 else end
            else:
                return

    def _document(self) -> None:
        t = self.text
        header: Key = ()
        while True:
            self._skip(newlines=True)
            if self.i >= len(t):
                return
            if t.startswith("[[", self.i):
                self.i += 2
                start = self.i
                parts = self._key()
                self._skip(False)
                self.i += 2
                header = self._resolve(parts, aot=True)
                self._record(header, start)
            elif t[self.i] == "[":
                self.i += 1
                start = self.i
                parts = self._key()
                self._skip(False)
                self.i += 1
                header = self._resolve(parts, aot=False)
                self._record(header, start)
            else:
                self._record_key_value(header)

    def _resolve(self, parts: list[str], *, aot: bool) -> Key:
        key: Key = ()
        for n, part in enumerate(parts):
            key += (part,)
            if aot and n == len(parts) - 1:
                count = self._aot.get(key, 0)
                self._aot[key] = count + 1
                key += (count,)
            elif key in self._aot:
                key += (self._aot[key] - 1,)
        return key

    def _record_key_value(self, prefix: Key) -> None:
        start = self.i
        parts = self._key()
        key = prefix + tuple(parts)
        self._record(key, start)
        self._skip(False)
        self.i += 1  # '='
        self._skip(False)
        self._value(key)

    def _key(self) -> list[str]:
        t = self.text
        parts: list[str] = []
        while True:
            self._skip(False)
            c = t[self.i]
            if c == '"':
                end = self._basic_end(self.i)
                parts.append(tomllib.loads("k = " + t[self.i : end])["k"])
                self.i = end
            elif c == "'":
                end = t.index("'", self.i + 1) + 1
                parts.append(t[self.i + 1 : end - 1])
                self.i = end
            else:
                m = BARE.match(t, self.i)
                if m is None:
                    raise ValueError("not a key")
                parts.append(m.group())
                self.i = m.end()
            self._skip(False)
            if self.i < len(t) and t[self.i] == ".":
                self.i += 1
                continue
            return parts

    def _basic_end(self, start: int) -> int:
        """The index after the closing quote of the basic string opening at ``start``."""
        t = self.text
        i = start + 1
        while t[i] != '"':
            i += 2 if t[i] == "\\" else 1
        return i + 1

    def _multiline_end(self, start: int, quote: str) -> int:
        t = self.text
        i = start + 3
        while True:
            if quote == '"' and t[i] == "\\":
                i += 2
                continue
            if t.startswith(quote * 3, i):
                run = 3
                while run < 5 and i + run < len(t) and t[i + run] == quote:
                    run += 1
                return i + run
            i += 1

    def _value(self, key: Key) -> None:
        t = self.text
        c = t[self.i]
        if c == "[":
            self.i += 1
            index = 0
            while True:
                self._skip(True)
                if t[self.i] == "]":
                    self.i += 1
                    return
                if t[self.i] == ",":
                    self.i += 1
                    continue
                self._record((*key, index))
                self._value((*key, index))
                index += 1
        elif c == "{":
            self.i += 1
            while True:
                self._skip(True)
                if t[self.i] == "}":
                    self.i += 1
                    return
                if t[self.i] == ",":
                    self.i += 1
                    continue
                self._record_key_value(key)
        elif t.startswith('"""', self.i) or t.startswith("'''", self.i):
            self.i = self._multiline_end(self.i, c)
        elif c == '"':
            self.i = self._basic_end(self.i)
        elif c == "'":
            self.i = t.index("'", self.i + 1) + 1
        else:
            while self.i < len(t) and t[self.i] not in ",]}\n#":
                self.i += 1
