"""The admin endpoint: /metrics, /healthz and /readyz on the one extra thread, reading, never writing."""

from __future__ import annotations

import hmac
import json
import logging
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from wal2http.config.secrets import Secret
from wal2http.config.validation import is_loopback
from wal2http.errors import ConfigError
from wal2http.observe.metrics import Metrics
from wal2http.runtime import BreakerState, RunState

logger = logging.getLogger(__name__)

# A client gets this long for its whole request: one slow client must not hold the only admin thread.
REQUEST_TIMEOUT_S = 5.0


def liveness(m: Metrics, stall_s: float, now: float | None = None) -> tuple[bool, dict[str, Any]]:
    """Alive when the main loop made progress or waited on purpose within ``stall_s``."""
    quiet = (time.monotonic() if now is None else now) - m.heartbeat
    if quiet > stall_s:
        return False, {"status": "stalled", "state": m.state,
                       "reason": f"the main loop made no progress for {quiet:.0f} s (limit {stall_s:g} s)"}
    return True, {"status": "ok", "state": m.state, "last_progress_s": round(quiet, 1)}


def readiness(m: Metrics) -> tuple[bool, dict[str, Any]]:
    """Ready when connected to PostgreSQL, streaming, and the circuit breaker is closed."""
    reasons = []
    if not m.replication_connected:
        reasons.append("not connected to PostgreSQL")
    if m.state != RunState.STREAMING:
        reasons.append(f"not streaming: {m.state}")
    if m.breaker_state != BreakerState.CLOSED:
        reasons.append(f"circuit breaker {m.breaker_state}: the receiver is failing")
    body: dict[str, Any] = {"status": "not ready" if reasons else "ready", "state": m.state,
                            "breaker": m.breaker_state, "connected": m.replication_connected}
    if reasons:
        body["reasons"] = reasons
    if m.parked_rows:  # informative: the other rows flow; replaying the dead-letter file unparks these
        body["parked_rows"] = m.parked_rows
    if m.backfill_table is not None:  # informative: a backfill does not make a run unready
        body["backfill"] = {"table": m.backfill_table, "rows_sent": m.backfill_table_rows}
    return not reasons, body


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_S
    server_version = "wal2http-admin"
    sys_version = ""
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        server = self.server
        if not server.authorized(self.headers.get("Authorization", "")):
            self._send(401, b'{"status": "unauthorized"}\n', "application/json",
                       {"WWW-Authenticate": 'Bearer realm="wal2http"'})
            return
        path = urlsplit(self.path).path
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(server.registry), content_type)
        elif path == "/healthz":
            self._json(*liveness(server.metrics, server.stall_s))
        elif path == "/readyz":
            self._json(*readiness(server.metrics))
        else:
            self._send(404, b'{"status": "not found", "paths": ["/metrics", "/healthz", "/readyz"]}\n',
                       "application/json")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _json(self, ok: bool, body: dict[str, Any]) -> None:
        self._send(200 if ok else 503, json.dumps(body).encode() + b"\n", "application/json")

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("admin request from %s: " + format, self.client_address[0], *args)


class _Server(HTTPServer):
    """Single-threaded on purpose: requests are answered one after the other on the admin thread."""

    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], metrics: Metrics, registry: CollectorRegistry,
                 stall_s: float, token: Secret | None) -> None:
        self.metrics = metrics
        self.registry = registry
        self.stall_s = stall_s
        self._expected = f"Bearer {token.reveal()}".encode() if token else None
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name, which can stall where DNS is missing.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def authorized(self, header: str) -> bool:
        if self._expected is None:
            return True
        return hmac.compare_digest(header.encode("utf-8", "replace"), self._expected)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("admin request from %s failed", client_address[0] if client_address else "?", exc_info=True)


class AdminServer:
    """Serves the admin paths from one daemon thread until ``close``."""

    def __init__(self, address: tuple[str, int], metrics: Metrics, stall_s: float,
                 token: Secret | None = None) -> None:
        host, port = address
        try:
            self._server = _Server((host, port), metrics, metrics.registry(), stall_s, token)
        except OSError as e:
            raise ConfigError(f"--metrics-addr {_show(host, port)}: cannot listen: {e.strerror or e}") from None
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.5,),
                                        name="wal2http-admin", daemon=True)
        self._thread.start()
        logger.info("admin endpoint on http://%s/ (/metrics, /healthz, /readyz)%s", _show(self.host, self.port),
                    ", bearer token required" if token else "")
        if token is None and not is_loopback(host):
            logger.warning("the admin endpoint listens on %s without WAL2HTTP_ADMIN_TOKEN: anyone who can "
                           "reach it can read the metrics", _show(self.host, self.port))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
