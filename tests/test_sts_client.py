"""The STS client's network layer (``cedarkey.server.sts_client``): TLS with certificate and host name
checks, connection reuse, a pooled connection the peer closed or wrote into, and error mapping. The peer
is a small asyncio HTTP server in this file, over real sockets, plain or TLS with a CA made here."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop
from botocore.credentials import Credentials
from cedarkey.client.proof import make_cloud_id
from cedarkey.server.sts import LoginFailed, MemoryReplayGuard, StsVerifier
from cedarkey.server.sts_client import StsTransport, effective_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.server import free_port

SERVER = "cedarkey-test-tls"
ANSWER = (
    b'<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
    b"<GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/app</Arn>"
    b"<UserId>AIDAEXAMPLE</UserId><Account>123456789012</Account></GetCallerIdentityResult>"
    b"</GetCallerIdentityResponse>"
)


# -- certificates ------------------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(tmp: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A CA and a leaf certificate for ``names`` (DNS names or IP addresses): (ca.pem, leaf.pem, leaf.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("cedarkey test CA"))
        .issuer_name(_name("cedarkey test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, leaf_pem, key_pem = tmp / "ca.pem", tmp / "leaf.pem", tmp / "leaf.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaf_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_pem, leaf_pem, key_pem


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


# -- a small HTTP peer --------------------------------------------------------------------------------------


class Peer:
    """Answers each request with ``ANSWER``; ``after`` runs on the connection after each answer (close it,
    write stray bytes...). Counts connections and requests."""

    def __init__(self, after: Callable[[asyncio.StreamWriter], Any] | None = None, keep_alive: bool = True) -> None:
        self.after = after
        self.keep_alive = keep_alive
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                self.requests += 1
                connection = b"keep-alive" if self.keep_alive else b"close"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nConnection: " + connection + b"\r\n"
                    b"Content-Length: " + str(len(ANSWER)).encode() + b"\r\n\r\n" + ANSWER
                )
                await writer.drain()
                if self.after is not None:
                    await self.after(writer)
                if not self.keep_alive:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(peer: Peer, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def server_tls(leaf: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(leaf), str(key))
    return ctx


CREDENTIALS = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")


def proof_for(url: str) -> str:
    return make_cloud_id(url, SERVER, credentials=CREDENTIALS, region="us-east-1")


async def post(transport: StsTransport, url: str, timeout: float = 5.0) -> httpx.Response:
    """A request sent as StsVerifier sends one: built here, handed straight to the transport."""
    request = httpx.Request(
        "POST",
        url,
        content=b"Action=GetCallerIdentity&Version=2011-06-15",
        extensions={"timeout": httpx.Timeout(timeout).as_dict()},
    )
    response = await transport.handle_async_request(request)
    try:
        await response.aread()
    finally:
        await response.aclose()
    return response


# -- TLS ----------------------------------------------------------------------------------------------------


RUNNERS = {"asyncio": asyncio.run, "uvloop": uvloop.run}  # the server runs on uvloop by default


@pytest.mark.parametrize("loop", sorted(RUNNERS))
def test_login_over_tls_with_a_trusted_certificate(tmp_path: Path, loop: str) -> None:
    ca, leaf, key = make_pki(tmp_path, ["localhost", "127.0.0.1"])

    async def run() -> dict[str, str]:
        peer = Peer()
        async with serving(peer, server_tls(leaf, key)) as port:
            url = f"https://localhost:{port}/"
            verifier = StsVerifier(SERVER, MemoryReplayGuard(), transport=StsTransport(trusting(ca)))
            try:
                return await verifier.verify(proof_for(url), url)
            finally:
                await verifier._transport.aclose()

    attrs = RUNNERS[loop](run())
    assert attrs["arn"] == "arn:aws:iam::123456789012:user/app"
    assert attrs["user_name"] == "app"


@pytest.mark.parametrize(
    ("names", "host", "why"),
    [
        (["localhost"], "localhost", "untrusted CA"),
        (["other.example"], "localhost", "wrong host name"),
    ],
)
def test_tls_refusals_are_sts_unreachable(tmp_path: Path, names: list[str], host: str, why: str) -> None:
    ca, leaf, key = make_pki(tmp_path, names)
    (tmp_path / "stranger").mkdir()
    stranger_ca, _, _ = make_pki(tmp_path / "stranger", ["localhost"])
    trusted = stranger_ca if why == "untrusted CA" else ca

    async def run() -> None:
        peer = Peer()
        async with serving(peer, server_tls(leaf, key)) as port:
            url = f"https://{host}:{port}/"
            verifier = StsVerifier(SERVER, MemoryReplayGuard(), transport=StsTransport(trusting(trusted)))
            try:
                with pytest.raises(LoginFailed) as info:
                    await verifier.verify(proof_for(url), url)
                assert info.value.reason == "sts_unreachable"
                assert peer.requests == 0  # the handshake failed: no request was ever sent
            finally:
                await verifier._transport.aclose()

    asyncio.run(run())


def test_the_default_client_verifies_certificates(tmp_path: Path) -> None:
    """Without a verify context the system's trust store applies: a private CA is refused."""
    _, leaf, key = make_pki(tmp_path, ["localhost"])

    async def run() -> None:
        async with serving(Peer(), server_tls(leaf, key)) as port:
            async with StsTransport() as transport:
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await post(transport, f"https://localhost:{port}/")

    asyncio.run(run())


# -- connections --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", sorted(RUNNERS))
def test_a_kept_alive_connection_is_reused_over_tls(tmp_path: Path, loop: str) -> None:
    ca, leaf, key = make_pki(tmp_path, ["localhost"])

    async def run() -> Peer:
        peer = Peer()
        async with serving(peer, server_tls(leaf, key)) as port:
            async with StsTransport(trusting(ca)) as transport:
                for _ in range(3):
                    answer = await post(transport, f"https://localhost:{port}/")
                    assert answer.status_code == 200 and answer.content == ANSWER
        return peer

    peer = RUNNERS[loop](run())
    assert (peer.connections, peer.requests) == (1, 3)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()


async def _stray(writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(0.01)  # after the answer was read: these bytes land on the idle pooled connection
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforge")
    await writer.drain()


@pytest.mark.parametrize("after", [_close, _stray], ids=["peer-closed", "stray-bytes"])
def test_a_pooled_connection_the_peer_spoiled_is_not_reused(after: Callable[..., Any]) -> None:
    """A connection the peer closed, or wrote unasked bytes into, while idle in the pool is dropped: the next
    request gets a fresh connection and the real answer, never the stray bytes."""

    async def run() -> Peer:
        peer = Peer(after=after)
        async with serving(peer) as port:
            async with StsTransport() as transport:
                for _ in range(3):
                    answer = await post(transport, f"http://127.0.0.1:{port}/")
                    assert answer.status_code == 200 and answer.content == ANSWER
                    await asyncio.sleep(0.05)  # let the close or the stray bytes arrive
        return peer

    peer = asyncio.run(run())
    assert (peer.connections, peer.requests) == (3, 3)


def test_connection_close_answers_open_a_connection_each() -> None:
    async def run() -> Peer:
        peer = Peer(keep_alive=False)
        async with serving(peer) as port:
            async with StsTransport() as transport:
                for _ in range(3):
                    assert (await post(transport, f"http://127.0.0.1:{port}/")).content == ANSWER
        return peer

    assert asyncio.run(run()).connections == 3


# -- errors -------------------------------------------------------------------------------------------------


def test_refused_connection_is_a_connect_error() -> None:
    async def run() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        async with StsTransport() as transport:
            with pytest.raises(httpx.ConnectError):
                await post(transport, f"http://127.0.0.1:{port}/")

    asyncio.run(run())


def test_a_silent_peer_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    async def run() -> None:
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with StsTransport() as transport:
                with pytest.raises(httpx.ReadTimeout):
                    await post(transport, f"http://127.0.0.1:{port}/", timeout=0.3)
        finally:
            server.close()

    asyncio.run(run())


def test_the_verifier_sends_through_this_transport() -> None:
    async def run() -> None:
        verifier = StsVerifier(SERVER, MemoryReplayGuard())
        try:
            assert isinstance(verifier._transport, StsTransport)
        finally:
            await verifier.aclose()

    asyncio.run(run())


# -- framing: what h11 accepts and refuses ------------------------------------------------------------------


async def scripted(answers: list[bytes], close: bool = True) -> tuple[asyncio.Server, int, list[bytes]]:
    """A peer that reads one request per connection and writes the next scripted answer as it is."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            seen.append(head + await reader.readexactly(length))
            writer.write(answers.pop(0))
            await writer.drain()
            if close:
                writer.close()
            else:
                await asyncio.sleep(5)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


def exchange(answer: bytes, close: bool = True, timeout: float = 5.0) -> tuple[httpx.Response, bytes]:
    async def run() -> tuple[httpx.Response, bytes]:
        server, port, seen = await scripted([answer], close)
        try:
            async with StsTransport() as transport:
                response = await post(transport, f"http://127.0.0.1:{port}/", timeout=timeout)
                return response, seen[0]
        finally:
            server.close()

    return asyncio.run(run())


def test_the_request_goes_out_in_one_piece_with_only_its_own_headers() -> None:
    response, request = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert response.status_code == 200 and response.content == b"ok"
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST / HTTP/1.1"
    assert sorted(line.split(b":")[0].lower() for line in lines[1:]) == [b"content-length", b"host"]
    assert body == b"Action=GetCallerIdentity&Version=2011-06-15"


@pytest.mark.parametrize(
    ("answer", "content"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n<a>\r\n4\r\n</a>\r\n0\r\n\r\n", b"<a></a>"),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the close", b"until the close"),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", b"x"),
    ],
    ids=["chunked", "close-delimited", "informational-first"],
)
def test_answers_framed_every_legal_way_are_read(answer: bytes, content: bytes) -> None:
    response, _ = exchange(answer)
    assert (response.status_code, response.content) == (200, content)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # cut short by the close
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",  # more head than h11 buffers
        b"HTTP/9 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
        b"",  # closed without a word
    ],
    ids=["truncated-body", "huge-head", "bad-status-line", "two-lengths", "silent-close"],
)
def test_badly_framed_answers_are_protocol_errors(answer: bytes) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        exchange(answer)


def test_an_answer_not_read_to_its_end_does_not_go_back_to_the_pool() -> None:
    async def run() -> int:
        peer = Peer()
        async with serving(peer) as port:
            async with StsTransport() as transport:
                request = httpx.Request("POST", f"http://127.0.0.1:{port}/", content=b"x")
                response = await transport.handle_async_request(request)
                await response.aclose()  # the body was never read
                assert (await post(transport, f"http://127.0.0.1:{port}/")).content == ANSWER
        return peer.connections

    assert asyncio.run(run()) == 2


def test_an_idle_connection_past_its_expiry_is_not_reused() -> None:
    async def run() -> int:
        peer = Peer()
        async with serving(peer) as port:
            async with StsTransport(keepalive_expiry=0.05) as transport:
                await post(transport, f"http://127.0.0.1:{port}/")
                await asyncio.sleep(0.1)
                await post(transport, f"http://127.0.0.1:{port}/")
        return peer.connections

    assert asyncio.run(run()) == 2


def test_a_closed_transport_closes_its_idle_connections_and_sends_nothing_more() -> None:
    async def run() -> None:
        closed = asyncio.Event()
        peer = Peer()
        original = peer.handle

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await original(reader, writer)
            closed.set()  # the peer saw the client's close

        peer.handle = handle  # type: ignore[method-assign]
        async with serving(peer) as port:
            transport = StsTransport()
            await post(transport, f"http://127.0.0.1:{port}/")
            await transport.aclose()
            await asyncio.wait_for(closed.wait(), 2)
            with pytest.raises(httpx.ConnectError):
                await post(transport, f"http://127.0.0.1:{port}/")

    asyncio.run(run())


def test_requests_beyond_the_in_flight_limit_wait_for_a_slot_or_time_out() -> None:
    """A flood of proofs that pass the local checks does not open a connection each: at most max_in_flight
    requests are out at once; the next waits for a slot, for at most its pool timeout."""

    async def run() -> None:
        release = asyncio.Event()

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await release.wait()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(slow, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        try:
            async with StsTransport(max_in_flight=1) as transport:
                first = asyncio.ensure_future(post(transport, url))
                await asyncio.sleep(0.05)
                request = httpx.Request(
                    "POST", url, content=b"x", extensions={"timeout": httpx.Timeout(5.0, pool=0.1).as_dict()}
                )
                with pytest.raises(httpx.PoolTimeout):
                    await transport.handle_async_request(request)
                waiting = asyncio.ensure_future(post(transport, url))  # a longer pool timeout: it gets the slot
                await asyncio.sleep(0.05)
                assert not waiting.done()
                release.set()
                assert (await first).content == b"ok"
                assert (await waiting).content == b"ok"
                # Slots come back on every path: an answer closed unread, and a failed connect.
                response = await transport.handle_async_request(httpx.Request("POST", url, content=b"x"))
                await response.aclose()
                with pytest.raises(httpx.ConnectError):
                    await post(transport, f"http://127.0.0.1:{free_port()}/")  # nobody listens
                assert (await post(transport, url)).content == b"ok"
        finally:
            server.close()

    asyncio.run(run())


def test_a_url_reaches_its_own_port_else_its_schemes_default() -> None:
    # Port 0 is a port the URL names (canonical_sts_url refuses it), never "no port": read as the default, a
    # proof for :0 would pass as one for :80.
    assert [effective_port("http", None), effective_port("https", None)] == [80, 443]
    assert [effective_port("http", 0), effective_port("https", 8443), effective_port("http", 443)] == [0, 8443, 443]
