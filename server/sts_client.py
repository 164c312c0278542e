"""The HTTP transport that carries login proofs to STS: httpx's transport over a network backend on asyncio
streams. ``StsVerifier`` builds each ``httpx.Request`` itself and hands it to this transport: no client layer,
so no default headers, cookie jar, redirects, proxies or ``.netrc`` (which would replace the signed
Authorization) can touch a proof.

httpx's default async network backend goes through anyio: every connect runs Happy Eyeballs in a task
group and every read and write opens cancel scopes. STS answers a proof once and most STS endpoints (and
moto) close the connection after it, so each login pays a fresh connect: measured here, anyio's path
added about 0.3 ms to every login. This backend plugs into httpcore's documented ``AsyncNetworkBackend``
interface with plain asyncio streams (``asyncio.open_connection``, ``StreamWriter.start_tls``), so
everything above it (httpx's request model, h11's framing, the connection pool, TLS verification with
httpx's default context) is unchanged. Only asyncio (and uvloop, which implements the same loop API) is
supported: the server never runs under trio.

Timeouts map to httpcore's timeout errors, socket and TLS errors to its connect, read and write errors,
which httpx turns into its own ``httpx.ConnectError`` and friends: ``sts.py`` sees exactly what it would
see with the default backend.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

KEEPALIVE = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout("STS did not send in time") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout("STS did not take the request in time") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        # No wait for the peer: a closed transport's socket is released by the loop on its own.
        self._writer.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            self._writer.close()
            raise httpcore.ConnectTimeout("the TLS handshake with STS timed out") from None
        except (OSError, ssl.SSLError) as exc:
            self._writer.close()
            raise httpcore.ConnectError(f"TLS with STS failed: {exc}") from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Asked of an idle pooled connection: anything there (the peer's close, or bytes nobody asked
            # for) means it must not carry another request.
            return self._reader.at_eof() or bool(getattr(self._reader, "_buffer", b""))
        name = {"ssl_object": "ssl_object", "client_addr": "sockname", "server_addr": "peername", "socket": "socket"}
        return self._writer.get_extra_info(name[info]) if info in name else None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[tuple[int, int, int | bytes] | tuple[int, int, None, int]] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"no connection to {host}:{port} in time") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[tuple[int, int, int | bytes] | tuple[int, int, None, int]] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("STS is reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class StsTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request and response mapping, error mapping) over ``AsyncioBackend``."""

    def __init__(self, verify: ssl.SSLContext | bool = True) -> None:
        context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify, trust_env=False)
        super().__init__(verify=context, limits=KEEPALIVE, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=KEEPALIVE.max_connections,
            max_keepalive_connections=KEEPALIVE.max_keepalive_connections,
            keepalive_expiry=KEEPALIVE.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=AsyncioBackend(),
        )
