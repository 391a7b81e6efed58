"""Real network parties for the networking tests: an aiohttp server that answers as it is told
(on the test's loop), and, on their own thread and loop (so a synchronous client can use them
too), a TLS server with a private CA made with ``cryptography`` that demands a client
certificate, in front of a sandbox, and a forward proxy that speaks ``CONNECT``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import attrs
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

T = TypeVar("T")


@asynccontextmanager
async def serving(
    handler: Callable[[web.Request], Any], host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """``handler`` for every path, on ``host``, on the running loop; yields the base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    try:
        yield f"http://{host}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@attrs.frozen(kw_only=True)
class Pki:
    """PEM files of a private CA, a server certificate for ``localhost`` and 127.0.0.1 signed
    by it, a client certificate signed by it, and some that must be refused."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_key: Path
    """A key that does not match ``client_cert``."""
    encrypted_key: Path
    """``client_cert``'s key, encrypted with a password."""
    not_pem: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer[0].subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        )
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> Path:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return path


def _write_cert(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def make_pki(directory: Path) -> Pki:
    ca_key = _key()
    ca = _certificate("LoyaltyLayer test CA", ca_key, None)
    server_key, client_key = _key(), _key()
    server = _certificate("localhost", server_key, (ca, ca_key), server=True)
    client = _certificate("bank-client", client_key, (ca, ca_key))
    not_pem = directory / "not.pem"
    not_pem.write_text("not a certificate\n")
    return Pki(
        ca=_write_cert(directory / "ca.pem", ca),
        server_cert=_write_cert(directory / "server.pem", server),
        server_key=_write_key(directory / "server.key", server_key),
        client_cert=_write_cert(directory / "client.pem", client),
        client_key=_write_key(directory / "client.key", client_key),
        other_key=_write_key(directory / "other.key", _key()),
        encrypted_key=_write_key(directory / "encrypted.key", client_key, b"hunter2"),
        not_pem=not_pem,
    )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with suppress(OSError, ssl.SSLError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _splice(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
) -> None:
    upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
    await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


class Servers:
    """An event loop on a thread, and the servers started on it (closed with it)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: list[asyncio.Server] = []

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def _serve(self, handler: Any, **options: Any) -> int:
        async def start() -> asyncio.Server:
            return await asyncio.start_server(handler, "127.0.0.1", 0, **options)

        server = self._run(start())
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def mtls_front(self, pki: Pki, backend_port: int) -> int:
        """A TLS server (certificate from ``pki``'s CA) that requires a client certificate from
        that CA and passes the decrypted bytes to ``127.0.0.1:backend_port``; its port."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki.ca)
        context.load_cert_chain(pki.server_cert, pki.server_key)
        context.verify_mode = ssl.CERT_REQUIRED

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _splice(reader, writer, "127.0.0.1", backend_port)

        return self._serve(handle, ssl=context)

    def connect_proxy(self, *, credentials: str | None = None) -> tuple[int, list[str]]:
        """A forward proxy that only tunnels (``CONNECT``); with ``credentials``
        (``user:password``) it answers 407 to requests without them. Returns its port and the
        list of request lines it accepted (appended as they come)."""
        accepted: list[str] = []
        expected = None
        if credentials is not None:
            expected = "Basic " + base64.b64encode(credentials.encode()).decode()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            except (asyncio.IncompleteReadError, OSError):
                writer.close()
                return
            method, target, _ = head[0].split(" ")
            headers = dict(line.split(": ", 1) for line in head[1:] if line)
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            elif expected is not None and headers.get("Proxy-Authorization") != expected:
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n")
                writer.write(b'Proxy-Authenticate: Basic realm="bank"\r\nContent-Length: 0\r\n\r\n')
            else:
                accepted.append(head[0])
                host, _, port = target.rpartition(":")
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await _splice(reader, writer, host, int(port))
                return
            await writer.drain()
            writer.close()

        return self._serve(handle), accepted

    def __enter__(self) -> Servers:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            handlers = asyncio.all_tasks() - {asyncio.current_task()}
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            for server in self._servers:
                await server.wait_closed()

        self._run(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


@contextmanager
def servers() -> Iterator[Servers]:
    with Servers() as running:
        yield running


__all__ = ["Pki", "Servers", "make_pki", "servers", "serving"]
