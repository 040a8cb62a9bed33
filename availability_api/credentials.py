"""TLS material for the server and the client, read from PEM files.

Server: certificate + key turn TLS on; a client CA on top turns on mutual TLS, where
a client must present a certificate signed by that CA or the handshake is refused.
The same :class:`ServerTls` secures the gRPC port (:func:`server_credentials`) and the
HTTP/JSON port (:func:`server_ssl_context`).
Client: a CA to trust the server (system roots when absent), and for mutual TLS its
own certificate + key.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from availability_contracts.errors import AvailabilityError


class TlsError(AvailabilityError, ValueError):
    """A TLS file is missing, unreadable or given without its partner."""

    code = "tls"


@dataclass(frozen=True)
class ServerTls:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set: clients must present a certificate it signed

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def server_tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> ServerTls | None:
    """The server's TLS settings from the three optional paths, checked for coherence."""
    if cert is None and key is None:
        if client_ca is not None:
            raise TlsError("a client CA (mutual TLS) needs the server's certificate and key")
        return None
    if cert is None or key is None:
        raise TlsError("TLS needs both a certificate and its private key")
    return ServerTls(Path(cert), Path(key), Path(client_ca) if client_ca else None)


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    key = _read(tls.key, "TLS key")
    cert = _read(tls.cert, "TLS certificate")
    client_ca = _read(tls.client_ca, "client CA") if tls.client_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def server_ssl_context(tls: ServerTls) -> ssl.SSLContext:
    """The HTTP/JSON port's TLS: same files and rules as :func:`server_credentials`
    (TLS 1.2 or newer; with a client CA, a client certificate it signed is required)."""
    for path, what in ((tls.cert, "TLS certificate"), (tls.key, "TLS key")):
        _read(path, what)  # a missing file is named the same way as for gRPC
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except ssl.SSLError as exc:
        raise TlsError(f"cannot use TLS certificate {tls.cert} with key {tls.key}: "
                       f"{exc.reason or exc}") from None
    if tls.client_ca is not None:
        ca = _read(tls.client_ca, "client CA")
        try:
            context.load_verify_locations(cadata=ca.decode("ascii", errors="replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise TlsError(f"cannot use client CA {tls.client_ca}: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def channel_credentials(ca: Path | None = None, cert: Path | None = None,
                        key: Path | None = None) -> grpc.ChannelCredentials:
    """Client credentials; ``cert`` and ``key`` go together (mutual TLS)."""
    if (cert is None) != (key is None):
        raise TlsError("a client certificate needs its private key, and the other way round")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "CA certificate") if ca else None,
        private_key=_read(key, "client key") if key else None,
        certificate_chain=_read(cert, "client certificate") if cert else None,
    )
