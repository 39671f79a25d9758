"""TLS on both sides of the gateway: HTTPS for clients (``server.tls``) and verified upstream connections
(``providers[].tls``).

Both sides build an :class:`ssl.SSLContext` from their config block. The contexts are built once while the
config is validated, so a missing file, a key that does not belong to the certificate or a wrong password
is a config error naming the key and the file, reported at start and never at the first request.

Server side: TLS 1.2 at least (1.3 on request), HTTP/1.1 by ALPN (uvicorn speaks no HTTP/2), compression
and renegotiation off, and with ``client_ca_file`` client certificates verified against that CA (mTLS).
:func:`uvicorn_ssl_options` hands the context to uvicorn through its ``ssl_context_factory`` option, so what
is validated is exactly what serves.

Upstream side: certificates are always verified unless ``verify: false``; ``ca_file`` replaces the default
trust store (certifi's bundle) with a private CA bundle; ``client_cert_file``/``client_key_file`` present
a client certificate. :func:`upstream_transport` gives each provider origin with TLS settings its own
connection pool with its context; every other origin uses the default transport.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

import certifi
import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.transport import UPSTREAM_LIMITS, GatewayTransport

log = logging.getLogger("gateway.tls")

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
EXPIRY_WARNING_DAYS = 14


class TLSFileError(ValueError):
    """A TLS file is missing, unreadable, not PEM, or does not fit with its partner file."""


def _readable(path: Path, what: str) -> Path:
    if not path.exists():
        raise TLSFileError(f"{what} {path} does not exist")
    if not path.is_file():
        raise TLSFileError(f"{what} {path} is not a file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise TLSFileError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    return path


def _load_chain(
    context: ssl.SSLContext,
    cert: Path,
    key: Path | None,
    password: str | None,
    *,
    cert_key: str,
    key_key: str,
) -> None:
    """``load_cert_chain`` with errors that say which file is wrong and why."""
    try:
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        probe.load_verify_locations(cafile=str(cert))
    except (ssl.SSLError, ValueError):
        raise TLSFileError(f"{cert_key} {cert} is not a PEM certificate") from None
    key_path = key or cert
    key_label = key_key if key else cert_key
    text = key_path.read_bytes()
    if b"PRIVATE KEY-----" not in text:
        raise TLSFileError(f"{key_label} {key_path} holds no PEM private key")
    encrypted = b"ENCRYPTED" in text
    if encrypted and password is None:
        raise TLSFileError(f"{key_label} {key_path} is encrypted: set its password")
    try:
        # A callable, never None: OpenSSL would otherwise prompt on the terminal for a password.
        context.load_cert_chain(str(cert), str(key) if key else None, password or (lambda: b""))
    except ssl.SSLError as exc:
        reason = (getattr(exc, "reason", None) or "").upper()
        if "KEY_VALUES_MISMATCH" in reason:
            raise TLSFileError(
                f"{key_label} {key_path} does not match the certificate in {cert_key} {cert}"
            ) from None
        if encrypted:
            raise TLSFileError(
                f"{key_label} {key_path}: wrong password, the key cannot be decrypted"
            ) from None
        raise TLSFileError(f"{key_label} {key_path} cannot be loaded ({reason or exc})") from None


def _load_ca(context: ssl.SSLContext, path: Path, what: str) -> None:
    try:
        context.load_verify_locations(cafile=str(path))
    except (ssl.SSLError, ValueError):
        raise TLSFileError(f"{what} {path} is not a PEM certificate bundle") from None


def _der_items(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, value) items of a DER-encoded sequence's content."""
    items = []
    i = 0
    while i < len(data):
        tag, length = data[i], data[i + 1]
        i += 2
        if length & 0x80:
            size = length & 0x7F
            length = int.from_bytes(data[i : i + size], "big")
            i += size
        items.append((tag, data[i : i + length]))
        i += length
    return items


def certificate_not_after(pem_file: Path) -> datetime:
    """When the first certificate in ``pem_file`` expires (X.509 ``validity.notAfter``), in UTC.

    A few lines of DER walking rather than a dependency: Certificate -> tbsCertificate -> the validity
    after the optional version, serial number, signature algorithm and issuer.
    """
    text = pem_file.read_text(encoding="ascii", errors="replace")
    start = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----", start)
    der = ssl.PEM_cert_to_DER_cert(text[start : end + len("-----END CERTIFICATE-----")])
    (_, certificate) = _der_items(der)[0]
    (_, tbs) = _der_items(certificate)[0]
    fields = _der_items(tbs)
    if fields[0][0] == 0xA0:  # explicit [0] version
        fields = fields[1:]
    (_, validity) = fields[3]
    tag, value = _der_items(validity)[1]
    stamp = value.decode("ascii")
    layout = "%y%m%d%H%M%SZ" if tag == 0x17 else "%Y%m%d%H%M%SZ"  # UTCTime or GeneralizedTime
    return datetime.strptime(stamp, layout).replace(tzinfo=UTC)


def _check_expiry(cert: Path, what: str, now: datetime | None = None) -> None:
    """Expired: an error. Expiring within ``EXPIRY_WARNING_DAYS``: a warning in the log."""
    try:
        not_after = certificate_not_after(cert)
    except (ValueError, IndexError, UnicodeDecodeError):
        return  # unusual encodings: OpenSSL already accepted the file, so do not block on this check
    now = now or datetime.now(UTC)
    if not_after <= now:
        raise TLSFileError(f"{what} {cert}: the certificate expired on {not_after:%Y-%m-%d %H:%M} UTC")
    if not_after - now < timedelta(days=EXPIRY_WARNING_DAYS):
        log.warning("%s %s expires on %s UTC: renew it", what, cert, f"{not_after:%Y-%m-%d %H:%M}")


class ServerTLSConfig(BaseModel):
    """``server.tls``: serve HTTPS with this certificate and key; optionally require client certificates."""

    model_config = ConfigDict(extra="forbid")

    cert_file: Path = Field(description="PEM certificate chain, leaf first")
    key_file: Path = Field(description="PEM private key of the certificate")
    key_password: str | None = Field(default=None, description="password of an encrypted key_file")
    min_version: Literal["1.2", "1.3"] = Field(default="1.2", description="oldest TLS version accepted")
    client_ca_file: Path | None = Field(default=None, description="CA bundle for client certificates (mTLS)")
    client_auth: Literal["optional", "required"] = Field(
        default="required", description="with client_ca_file: must every client present a certificate"
    )

    @field_validator("cert_file", "key_file", "client_ca_file")
    @classmethod
    def _exists(cls, value: Path | None, info: Any) -> Path | None:
        return None if value is None else _readable(value, info.field_name)

    @field_validator("min_version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        # YAML reads an unquoted 1.2 as a number.
        return str(value) if isinstance(value, float) else value

    @model_validator(mode="after")
    def _loads(self) -> ServerTLSConfig:
        server_context(self)
        _check_expiry(self.cert_file, "cert_file")
        return self


class UpstreamTLSConfig(BaseModel):
    """``providers[].tls``: how the gateway verifies an upstream, and the client certificate it presents."""

    model_config = ConfigDict(extra="forbid")

    verify: bool = Field(default=True, description="false disables certificate checks (never in production)")
    ca_file: Path | None = Field(default=None, description="PEM bundle trusted instead of the default CAs")
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    client_key_password: str | None = None

    @field_validator("ca_file", "client_cert_file", "client_key_file")
    @classmethod
    def _exists(cls, value: Path | None, info: Any) -> Path | None:
        return None if value is None else _readable(value, info.field_name)

    @model_validator(mode="after")
    def _loads(self) -> UpstreamTLSConfig:
        if self.client_key_file is not None and self.client_cert_file is None:
            raise TLSFileError("client_key_file is set without client_cert_file")
        upstream_context(self)
        return self


def server_context(config: ServerTLSConfig) -> ssl.SSLContext:
    """The server-side context for ``config``; raises :class:`TLSFileError` naming the bad file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[config.min_version]
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    _load_chain(
        context,
        config.cert_file,
        config.key_file,
        config.key_password,
        cert_key="cert_file",
        key_key="key_file",
    )
    # uvicorn serves HTTP/1.1 only; announcing it lets clients skip an h2 attempt.
    context.set_alpn_protocols(["http/1.1"])
    if config.client_ca_file is not None:
        _load_ca(context, config.client_ca_file, "client_ca_file")
        context.verify_mode = ssl.CERT_REQUIRED if config.client_auth == "required" else ssl.CERT_OPTIONAL
    return context


def upstream_context(config: UpstreamTLSConfig) -> ssl.SSLContext:
    """The client-side context for connections to one upstream."""
    context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else certifi.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.client_cert_file is not None:
        _load_chain(
            context,
            config.client_cert_file,
            config.client_key_file,
            config.client_key_password,
            cert_key="client_cert_file",
            key_key="client_key_file",
        )
    return context


def _uvicorn_context(
    config: ServerTLSConfig, _uvicorn_config: Any, _default: Callable[[], ssl.SSLContext]
) -> ssl.SSLContext:
    return server_context(config)


def uvicorn_ssl_options(config: ServerTLSConfig | None) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``/``uvicorn.run`` serving ``config`` (empty for plain HTTP).

    The file options make uvicorn report ``https://`` and keep its own checks; ``ssl_context_factory``
    replaces uvicorn's context with :func:`server_context`, which enforces the minimum TLS version.
    """
    if config is None:
        return {}
    options: dict[str, Any] = {
        "ssl_certfile": str(config.cert_file),
        "ssl_keyfile": str(config.key_file),
        "ssl_keyfile_password": config.key_password,
        # A partial of a module-level function pickles, so `--workers N` processes can rebuild it.
        "ssl_context_factory": partial(_uvicorn_context, config),
    }
    if config.client_ca_file is not None:
        options["ssl_ca_certs"] = str(config.client_ca_file)
        options["ssl_cert_reqs"] = (
            ssl.CERT_REQUIRED if config.client_auth == "required" else ssl.CERT_OPTIONAL
        )
    return options


class _TLSProvider(Protocol):
    name: str
    base_url: str | None
    tls: UpstreamTLSConfig | None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"https": 443, "http": 80}.get(url.scheme)
    return url.scheme, url.host, url.port or default


class UpstreamTransport(httpx.AsyncBaseTransport):
    """Sends each request through the pool of its origin's TLS settings, or the default pool."""

    def __init__(
        self,
        default: httpx.AsyncBaseTransport,
        by_origin: Mapping[tuple[str, str, int | None], httpx.AsyncBaseTransport],
    ) -> None:
        self.default = default
        self.by_origin = dict(by_origin)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Dispatch by the request's origin (scheme, host, port)."""
        transport = self.by_origin.get(_origin(request.url), self.default)
        return await transport.handle_async_request(request)

    def transport_for(self, url: str) -> httpx.AsyncBaseTransport:
        """The pool requests to ``url`` go through (a provider resolves its own once)."""
        return self.by_origin.get(_origin(httpx.URL(url)), self.default)

    async def aclose(self) -> None:
        """Close every pool."""
        for transport in (self.default, *self.by_origin.values()):
            await transport.aclose()


def upstream_transport(
    providers: Iterable[_TLSProvider],
    default: httpx.AsyncBaseTransport,
    *,
    limits: httpx.Limits | None = None,
) -> httpx.AsyncBaseTransport:
    """``default``, or an :class:`UpstreamTransport` when some provider has ``tls`` settings.

    Providers sharing an origin must share TLS settings (config validation checks this).
    """
    by_origin: dict[tuple[str, str, int | None], httpx.AsyncBaseTransport] = {}
    for provider in providers:
        if provider.tls is None or not provider.base_url:
            continue
        if not provider.tls.verify:
            log.warning(
                "TLS verification is OFF for upstream provider %r: anyone on the path can read it",
                provider.name,
            )
        origin = _origin(httpx.URL(provider.base_url))
        if origin not in by_origin:
            # The gateway's own transport with this origin's context, so TLS upstreams are sent through the
            # gateway's own client too (gateway/upstream_client.py) with the default pool's limits.
            by_origin[origin] = GatewayTransport(
                verify=upstream_context(provider.tls), limits=limits or UPSTREAM_LIMITS
            )
    return UpstreamTransport(default, by_origin) if by_origin else default


def origin_conflicts(providers: Iterable[_TLSProvider]) -> list[tuple[int, str]]:
    """Problems with providers' TLS settings, by provider index: ``tls`` without ``base_url``, and an origin
    another provider already uses with different TLS settings (one connection pool serves an origin)."""
    seen: dict[tuple[str, str, int | None], tuple[str, UpstreamTLSConfig | None]] = {}
    problems: list[tuple[int, str]] = []
    for index, provider in enumerate(providers):
        if not provider.base_url:
            if provider.tls is not None:
                problems.append((index, "required with tls: TLS settings apply to the provider's address"))
            continue
        origin = _origin(httpx.URL(provider.base_url))
        if origin in seen and seen[origin][1] != provider.tls:
            problems.append(
                (
                    index,
                    f"provider '{seen[origin][0]}' uses the same host and port with different tls settings",
                )
            )
        seen.setdefault(origin, (provider.name, provider.tls))
    return problems
