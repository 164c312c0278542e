"""The httpx transport that carries login proofs to STS: HTTP/1.1 framed by h11 over asyncio streams.

``StsVerifier`` builds each ``httpx.Request`` itself and hands it to :class:`StsTransport`: no client layer,
so no default headers, cookie jar, redirects, proxies or ``.netrc`` (which would replace the signed
Authorization) can touch a proof. httpx stays the interface (its request and response model, its timeouts,
its exceptions); this module is the wire underneath, in place of httpx's default httpcore pool.

Why not httpcore: a login makes one small request, and STS (moto too) closes the connection after most
answers, so each login pays a connect. httpcore's general machinery around that exchange (its pool and
connection objects, locks, trace hooks, a separate write for the body) was a large share of the server's
own cost per login (``bench/login.py`` measures it); this transport does the same exchange with the same
parser (h11, which is what httpcore uses for HTTP/1.1) in one write and a read loop.

What it does, and nothing more:

- TCP (``TCP_NODELAY``) or TLS with the given ``ssl.SSLContext`` (httpx's default context: certificates
  and host names verified against the system's trust store);
- at most ``max_in_flight`` requests at once (100; the others wait up to their pool timeout);
- one request per connection at a time; after a complete exchange that both sides keep open, the
  connection waits in a small pool (per origin, at most ``max_idle``, for ``keepalive_expiry`` seconds). A
  pooled connection the peer closed, or wrote unasked bytes into, is dropped, never reused;
- httpx's ``timeout`` extension: connect (TCP and TLS), write and read (each read) timeouts;
- errors as httpx's own: ``PoolTimeout``, ``ConnectError``/``ConnectTimeout``, ``WriteError``/``WriteTimeout``,
  ``ReadError``/``ReadTimeout``, ``RemoteProtocolError`` (h11 refused the answer's framing: a header block
  over 16 KiB, a bad status line, a body cut short...).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator

import h11
import httpx

MAX_IDLE = 20
#: At most this many requests to STS at once (a flood of proofs that pass the local checks waits for a slot,
#: for at most the request's pool timeout, rather than opening a connection each).
MAX_IN_FLIGHT = 100
KEEPALIVE_EXPIRY = 5.0
READ_SIZE = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}


def effective_port(scheme: str, port: int | None) -> int:
    """The port a URL of ``scheme`` reaches: its own (0 included: never read as "none"), else the default."""
    return DEFAULT_PORTS[scheme] if port is None else port


Origin = tuple[str, str, int]


class _Connection:
    """One HTTP/1.1 connection: an asyncio stream pair and its h11 state."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0

    @classmethod
    async def open(cls, origin: Origin, context: ssl.SSLContext, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        tls = context if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        except UnicodeError as exc:  # a host name IDNA cannot encode: nothing to resolve
            raise httpx.ConnectError(f"cannot connect to {host!r}: not a host name ({exc})") from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    def spoiled(self) -> bool:
        """True when the peer closed this idle connection or sent bytes nobody asked for."""
        reader = self.reader
        return (
            reader.at_eof()
            or reader.exception() is not None
            or bool(getattr(reader, "_buffer", b""))
            or (self.writer.is_closing())
        )

    async def send(self, request: h11.Request, body: bytes, timeout: float | None) -> None:
        try:
            data = self.h11.send(request) + (self.h11.send(h11.Data(data=body)) if body else b"")
            data += self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from None
        try:
            async with asyncio.timeout(timeout):
                self.writer.write(data)  # the whole request in one write
                await self.writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout("STS did not take the request in time") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.WriteError(str(exc)) from exc

    async def next_event(self, timeout: float | None) -> h11.Event | type[h11.PAUSED]:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from None
            if event is not h11.NEED_DATA:
                return event
            try:
                async with asyncio.timeout(timeout):
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError:
                raise httpx.ReadTimeout("STS did not answer in time") from None
            except (OSError, ssl.SSLError) as exc:
                raise httpx.ReadError(str(exc)) from exc
            try:
                self.h11.receive_data(data)  # b"" is the peer's close: h11 says whether that was allowed
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from None

    def reusable(self) -> bool:
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    def close(self) -> None:
        # No wait for the peer: a closed transport's socket is released by the loop on its own.
        self.writer.close()


class _ResponseBody(httpx.AsyncByteStream):
    """The answer's body as h11 frames it; the connection goes back to the pool once it was read whole."""

    def __init__(self, transport: StsTransport, origin: Origin, conn: _Connection, timeout: float | None) -> None:
        self._transport = transport
        self._origin = origin
        self._conn: _Connection | None = conn
        self._timeout = timeout  # the request's slot is held until the body is read or closed

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            raise httpx.StreamClosed()
        try:
            while True:
                event = await conn.next_event(self._timeout)
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
                else:  # PAUSED, or an event that cannot follow a response's head
                    raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__} in STS's answer")
        except BaseException:
            await self.aclose()
            raise
        self._conn = None
        self._transport._release(self._origin, conn)
        self._transport._slots.release()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()  # not read to its end: the connection's state is unknown
            self._transport._slots.release()


class StsTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        verify: ssl.SSLContext | bool = True,
        *,
        max_idle: int = MAX_IDLE,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._context = (
            verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify, trust_env=False)
        )
        self._max_idle = max_idle
        self._keepalive_expiry = keepalive_expiry
        self._idle: dict[Origin, list[_Connection]] = {}
        self._slots = asyncio.Semaphore(max_in_flight)
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise httpx.ConnectError("the STS transport is closed")
        url = request.url
        if url.scheme not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"STS is reached over http or https, not {url.scheme!r}")
        origin: Origin = (url.scheme, url.host, effective_port(url.scheme, url.port))
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        head = h11.Request(method=request.method, target=url.raw_path, headers=request.headers.raw)
        await self._take_slot(timeouts.get("pool"))
        conn: _Connection | None = None
        try:
            conn = self._checkout(origin) or await _Connection.open(origin, self._context, timeouts.get("connect"))
            await conn.send(head, body, timeouts.get("write"))
            while True:
                event = await conn.next_event(timeouts.get("read"))
                if isinstance(event, h11.Response):
                    break
                if not isinstance(event, h11.InformationalResponse):  # 1xx answers come before the real one
                    raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__} instead of STS's answer")
        except BaseException:
            if conn is not None:
                conn.close()
            self._slots.release()
            raise
        return httpx.Response(
            event.status_code,
            headers=event.headers.raw_items(),
            stream=_ResponseBody(self, origin, conn, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": bytes(event.reason)},
        )

    async def _take_slot(self, timeout: float | None) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # free: taken at once, no timer
            return
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("too many requests to STS at once") from None

    def _checkout(self, origin: Origin) -> _Connection | None:
        pool = self._idle.get(origin)
        now = time.monotonic()
        while pool:
            conn = pool.pop()
            if now - conn.idle_since < self._keepalive_expiry and not conn.spoiled():
                return conn
            conn.close()
        return None

    def _release(self, origin: Origin, conn: _Connection) -> None:
        pool = self._idle.setdefault(origin, [])
        if self._closed or not conn.reusable() or len(pool) >= self._max_idle:
            conn.close()
            return
        conn.h11.start_next_cycle()
        conn.idle_since = time.monotonic()
        pool.append(conn)

    async def aclose(self) -> None:
        self._closed = True
        for pool in self._idle.values():
            for conn in pool:
                conn.close()
        self._idle.clear()
