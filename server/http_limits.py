"""What one connection may hold of the server: a request head of bounded size and header count, read within
a deadline; a body that keeps arriving; no idle socket kept for ever.

uvicorn bounds none of this under httptools (the shipped parser): a client could send a 200 MB header, or
hold a socket open sending a byte a second. :func:`protocol` gives uvicorn's HTTP protocol class of
``--http`` with these limits; the h11 parser bounds its head itself (``h11_max_incomplete_event_size``,
set from the same :class:`Limits`), and both get the deadlines.

A head too large or with too many headers is answered ``431`` and the connection closed; a head that has
not arrived within ``head_timeout`` (an idle socket, a trickle, an HTTP/0.9-style request line), a body
that stalls for ``body_timeout`` and one not complete after ``body_deadline`` are cut off without an answer
(the app sees a disconnect, answered as :data:`cedarkey.server.app.DISCONNECTED`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Limits:
    #: Bytes of a request line and headers together.
    max_head: int = 32 * 1024
    max_headers: int = 100
    #: Seconds for a request head to arrive (counted from the connection, or from the previous answer).
    head_timeout: float = 10.0
    #: Seconds a request body may go without a byte arriving, and may take in all.
    body_timeout: float = 10.0
    body_deadline: float = 60.0


_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


def too_large_response(what: str) -> bytes:
    body = b'{"error":"HeaderTooLarge","message":"%s"}' % what.encode()
    return _TOO_LARGE % (len(body), body)


class _Deadlines:
    """A connection's watchdog, one timer per connection: every half deadline it checks that a request head
    awaited since the connection or the last answer has not taken ``head_timeout``, and that a body being read
    received bytes since the last check; it closes the connection otherwise."""

    limits: Limits
    transport: asyncio.Transport
    cycle: Any
    _received = 0
    _waiting_since: float | None = None
    _body_since: tuple[Any, float] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._waiting_since = asyncio.get_running_loop().time()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        super().data_received(data)  # type: ignore[misc]

    def _arm(self) -> None:
        self._seen = (self.cycle, self._received)
        period = min(self.limits.head_timeout, self.limits.body_timeout) / 2
        self._watchdog = asyncio.get_running_loop().call_later(period, self._check)

    def _disarm(self) -> None:
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None:
            watchdog.cancel()

    def _check(self) -> None:
        if self.transport.is_closing():
            return
        now, cycle = asyncio.get_running_loop().time(), self.cycle
        if cycle is None or cycle.response_complete:  # awaiting a request head
            if self._waiting_since is None or cycle is not self._seen[0]:  # answered one since: a new wait
                self._waiting_since = now
            elif now - self._waiting_since >= self.limits.head_timeout:
                self.transport.close()
                return
        else:
            self._waiting_since = None
            if cycle.more_body:
                if self._body_since is None or self._body_since[0] is not cycle:
                    self._body_since = (cycle, now)
                stalled = (cycle, self._received) == self._seen
                if stalled or now - self._body_since[1] >= self.limits.body_deadline:  # a trickle, too
                    self.transport.close()
                    return
        self._arm()


def protocol(kind: str, limits: Limits) -> type:
    """uvicorn's protocol class for ``--http kind`` (auto: httptools when installed) with ``limits``."""
    if kind in ("auto", "httptools"):
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        except ImportError:  # pragma: no cover - httptools is a dependency
            if kind == "httptools":
                raise
        else:
            return _httptools(HttpToolsProtocol, limits)
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return _h11(H11Protocol, limits)


def _httptools(base: type, limits: Limits) -> type:
    class LimitedHttpTools(_Deadlines, base):  # type: ignore[misc, valid-type]
        _head = _count = 0

        def on_message_begin(self) -> None:
            self._head = self._count = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._grow(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count += 1
            self._grow(len(name) + len(value) + 4)
            if self._count > limits.max_headers:
                self.on_header_refused(f"more than {limits.max_headers} headers")
            super().on_header(name, value)

        def _grow(self, n: int) -> None:
            self._head += n
            if self._head > limits.max_head:
                self.on_header_refused(f"request head larger than {limits.max_head} bytes")

        def on_header_refused(self, why: str) -> None:
            self._refused = why
            raise _Refused(why)  # stops the parser; httptools reports it as a parser error

        def send_400_response(self, msg: str) -> None:
            refused, self._refused = getattr(self, "_refused", None), None
            if refused is None:
                super().send_400_response(msg)
            else:
                self.transport.write(too_large_response(refused))
                self.transport.close()

    LimitedHttpTools.limits = limits
    return LimitedHttpTools


def _h11(base: type, limits: Limits) -> type:
    class LimitedH11(_Deadlines, base):  # type: ignore[misc, valid-type]
        pass

    LimitedH11.limits = limits
    return LimitedH11


class _Refused(Exception):
    pass
