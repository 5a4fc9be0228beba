"""Is the receiver reachable? Resolve its host, open TCP (and TLS for https), send nothing."""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlsplit

from wal2http.deadline import DeadlineExceeded, deadline
from wal2http.errors import ConfigError


def probe(url: str, timeout: float, tls: ssl.SSLContext | None = None) -> str:
    """Describe a successful connection to ``url``'s host and port; ConfigError saying what failed.

    ``timeout`` bounds the whole probe: resolving, connecting and the TLS handshake together. An https
    URL's handshake uses ``tls`` (the sink's trust and client certificate), else the system's defaults.
    """
    try:
        with deadline(timeout):
            return _probe(url, timeout, tls)
    except DeadlineExceeded:
        raise ConfigError(f"no connection to {_where(url)} within {timeout:g} s (--http-timeout): "
                          "the host, a firewall or the TLS handshake does not answer") from None


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or ''}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def _probe(url: str, timeout: float, tls_context: ssl.SSLContext | None) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    where = f"{host}:{port}"
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ConfigError(f"cannot resolve {host!r}: {e.strerror}") from None
    errors = []
    for family, kind, proto, _name, address in addresses:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except OSError as e:
            sock.close()
            errors.append(f"{address[0]}: {e.strerror or e}")
            continue
        with sock:
            tls = _handshake(sock, host, where, tls_context) if parts.scheme == "https" else ""
        return f"{where} ({address[0]}) accepts TCP connections{tls}; no request sent"
    raise ConfigError(f"cannot connect to {where}: {'; '.join(errors)}")


def _handshake(sock: socket.socket, host: str, where: str, context: ssl.SSLContext | None) -> str:
    context = context or ssl.create_default_context()
    try:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            return f", TLS {tls.version()} with a valid certificate for {host}"
    except (ssl.SSLError, ssl.CertificateError, OSError) as e:
        reason = getattr(e, "verify_message", None) or getattr(e, "reason", None) or str(e)
        raise ConfigError(f"TLS handshake with {where} failed: {reason}") from None
