"""The validation rules: every invalid setting found before any connection opens."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wal2http.config import signing
from wal2http.config.cloudevents import EventFormat, validate_cloudevents
from wal2http.config.hook0 import validate_hook0
from wal2http.config.routing import url_template_example
from wal2http.config.secrets import HTTP_BEARER_TOKEN, Secret
from wal2http.config.sections import (
    RANGES,
    HttpConfig,
    NotifyConfig,
    OnReject,
    SinkKind,
)
from wal2http.config.settings import Config, SinkConfig
from wal2http.config.validation import (
    check_bearer_token,
    check_range,
    check_tls_files,
    is_loopback,
    validate_identifier,
    validate_url,
)
from wal2http.errors import ConfigError

SLOT_NAME_RE = re.compile(r"^[a-z0-9_]{1,63}$")


@dataclass(frozen=True)
class SettingProblem:
    """One invalid setting: the group it belongs to (``dsn``, ``slot``, ``publication``, ``sink``,
    ``batch``, ``delivery``) and the message an operator sees."""

    setting: str
    message: str


def validate(config: Config, database: bool = True) -> Config:
    """Raise ConfigError naming the first invalid setting and what is allowed; return the config.

    ``database`` is False for commands that never connect (``replay``).
    """
    found = problems(config, database)
    if found:
        raise ConfigError(found[0].message)
    return config


def problems(config: Config, database: bool = True) -> list[SettingProblem]:
    """Every invalid setting, in the order ``validate`` reports them (``check-config`` lists all)."""
    found: list[SettingProblem] = []

    def check(setting: str, rule: Callable[..., object], *args: Any) -> None:
        """Run one rule that raises ConfigError; its message becomes a SettingProblem of ``setting``."""
        try:
            rule(*args)
        except ConfigError as e:
            found.append(SettingProblem(setting, str(e)))

    src = config.source
    if database and not src.dsn:
        found.append(SettingProblem(
            "dsn", "no database given: set WAL2HTTP_DSN (or DATABASE_URL), --dsn-file or --dsn"))
    if not SLOT_NAME_RE.match(src.slot):
        found.append(SettingProblem(
            "slot", f"invalid --slot {src.slot!r}: use 1-63 lower-case letters, digits or underscores"
        ))
    check("publication", validate_identifier, src.publication, "--publication")
    check("sink", validate_sink, config.sink, bool(config.routing.routes))
    check("routes", validate_routes, config)
    http = config.sink.http
    if http is not None and http.format != EventFormat.JSON:
        if config.sink.kind != SinkKind.HTTP:
            # A file capture is what replay and routes read back: it keeps the event format.
            why = ("Hook0 shapes its own requests" if config.sink.kind == SinkKind.HOOK0
                   else f"--sink {config.sink.kind} writes the events as JSON lines")
            found.append(SettingProblem("sink", f"--format {http.format} applies to --sink http only; {why}"))
        elif not database and http.cloudevents.source is None:
            found.append(SettingProblem(
                "sink", f"replay --format {http.format} needs --ce-source: give the source run used (by default "
                        "/wal2http/DATABASE/SLOT), so receivers see the same source and id again"))
    b = config.batch
    for option, value in (("batch_size", b.max_events), ("batch_bytes", b.max_bytes),
                          ("batch_wait_ms", b.max_wait_ms)):
        check("batch", check_range, _flag(option), value, *RANGES[option])
    d = config.delivery
    if d.on_reject not in tuple(OnReject):
        found.append(SettingProblem("delivery", f"--on-reject must be halt, dead-letter or skip, not {d.on_reject!r}"))
    if d.on_reject == OnReject.DEAD_LETTER and not d.dead_letter_path:
        found.append(SettingProblem(
            "delivery", "--on-reject dead-letter needs --dead-letter-path (or WAL2HTTP_DEAD_LETTER_PATH)"
        ))
    check("delivery", check_range, "--max-event-bytes", d.max_event_bytes, *RANGES["max_event_bytes"])
    for flag, on in (("--give-up-after", d.give_up_after_s is not None),
                     ("--give-up-attempts", d.give_up_attempts is not None),
                     ("--max-dead-letters", d.max_dead_letters is not None)):
        if on and not d.dead_letter_path and not config.routing.routes:
            found.append(SettingProblem(
                "delivery", f"{flag} needs --dead-letter-path (or WAL2HTTP_DEAD_LETTER_PATH): that file keeps "
                            "the events given up and the rows parked behind them"))
    if d.gives_up and config.sink.kind in (SinkKind.STDOUT, SinkKind.FILE):
        # Their only failure that waiting heals is a full disk: no event's fault, so none is given up.
        found.append(SettingProblem(
            "delivery", f"--give-up-after and --give-up-attempts apply to receivers (--sink http or hook0), "
                        f"not --sink {config.sink.kind}: a full disk is waited out"))
    if d.breaker_failures < 1:
        found.append(SettingProblem("delivery", "--breaker-failures must be at least 1"))
    if d.breaker_cooldown_s <= 0 or d.shutdown_timeout_s < 0:
        found.append(SettingProblem(
            "delivery", "--breaker-cooldown must be positive and --shutdown-timeout not negative"
        ))
    check("backfill", check_range, "--backfill-chunk-size", config.backfill.chunk_size,
          *RANGES["backfill_chunk_size"])
    check("backfill", check_range, "--backfill-chunk-bytes", config.backfill.chunk_bytes,
          *RANGES["backfill_chunk_bytes"])
    if config.backfill.initial and not src.create_slot:
        found.append(SettingProblem("backfill", "run --backfill needs --create-slot: it queues a backfill of every "
                                                "published table when the slot is created; use 'wal2http backfill' "
                                                "for an existing slot"))
    check("notify", validate_notify, config.notify)
    return found


def validate_sink(sink: SinkConfig, routed: bool = False) -> None:
    """The first problem of the chosen sink's settings, as ConfigError; ``routed``: --routes gives the URLs."""
    if sink.kind not in tuple(SinkKind):
        raise ConfigError(f"unknown sink {sink.kind!r}: choose one of {', '.join(SinkKind)}")
    if sink.kind == SinkKind.HTTP and not routed:
        if sink.http is None or not sink.http.url:
            raise ConfigError("--sink http needs --http-url (or WAL2HTTP_HTTP_URL, HTTP_ENDPOINT_URL)")
        validate_http(sink.http)
    if sink.kind == SinkKind.FILE and not sink.file_path:
        raise ConfigError("--sink file needs --file-path (or WAL2HTTP_FILE_PATH)")
    if sink.kind == SinkKind.HOOK0:
        validate_hook0(sink.hook0)


def validate_routes(config: Config) -> None:
    """--routes: with --sink http and without --http-url; each route's destination as --http-url's."""
    routing = config.routing
    if not routing.routes:
        return
    if config.sink.kind != SinkKind.HTTP:
        raise ConfigError(f"--routes sends to http receivers: use it with --sink http, not --sink {config.sink.kind}")
    if config.sink.http is not None and config.sink.http.url:
        raise ConfigError("--routes gives each route its url: leave out --http-url")
    if config.delivery.on_reject != OnReject.HALT or config.delivery.dead_letter_path:
        raise ConfigError("with --routes, each route has its own on_reject and dead_letter_path: leave out "
                          "--on-reject and --dead-letter-path")
    for route in routing.routes:
        if config.delivery.gives_up and not route.dead_letter_path:
            raise ConfigError(f"--routes {routing.routes_file}, route {route.name!r}: --give-up-after and "
                              "--give-up-attempts need a dead_letter_path in every route")
        try:
            validate_http(route.http)
        except ConfigError as e:
            raise ConfigError(f"--routes {routing.routes_file}, route {route.name!r}: "
                              f"{str(e).replace('--http-url', 'url').replace('--header', 'header')}") from None


def validate_http(http: HttpConfig) -> None:
    """The receiver URL, credentials, signing secrets and TLS files of the http sink."""
    validate_url(url_template_example(http.url, http.headers), "--http-url")
    check_range("--http-timeout", http.timeout_s, *RANGES["http_timeout"])
    if http.bearer_token is not None:
        check_bearer_token(http.bearer_token.reveal(), f"the bearer token ({HTTP_BEARER_TOKEN.describe()})")
    signing.signing_keys(http.signing_secrets)
    if http.bearer_token is not None and any(h.name.lower() == "authorization" for h in http.headers):
        raise ConfigError(
            f"--header Authorization conflicts with the bearer token ({HTTP_BEARER_TOKEN.describe()}): "
            "keep one of them"
        )
    check_tls_files(http.ca_file, http.client_cert, http.client_key)
    validate_cloudevents(http.cloudevents)


def split_signing_secrets(secret: Secret | None) -> tuple[Secret, ...]:
    """Several secrets, separated by white space, sign each request with all of them (rotation)."""
    return tuple(Secret(s) for s in secret.reveal().split()) if secret is not None else ()


def parse_listen_address(text: str, option: str = "--metrics-addr") -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT`` or ``PORT``; the host defaults to 127.0.0.1."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"{option} {text!r}: write an IPv6 address in brackets, e.g. [::1]:9187")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{option} {text!r}: expected HOST:PORT or PORT, with a port from 1 to 65535")
    return host or "127.0.0.1", int(port_text)


def validate_notify(n: NotifyConfig) -> None:
    if not n.smtp_host:
        return
    if not n.recipients:
        raise ConfigError("SMTP_HOST is set but no recipient: set --smtp-to (or WAL2HTTP_SMTP_TO, SMTP_TO)")
    if not n.sender:
        raise ConfigError("SMTP_HOST is set but no sender: set --smtp-from (or WAL2HTTP_SMTP_FROM, SMTP_FROM)")
    for address in (n.sender, *n.recipients):
        if "@" not in address or any(c.isspace() for c in address):
            raise ConfigError(f"not an email address: {address!r} (--smtp-from, --smtp-to)")
    if n.password and not n.username:
        raise ConfigError("an SMTP password is set without --smtp-username")
    if n.password and not n.starttls and not is_loopback(n.smtp_host):
        raise ConfigError("the SMTP password would cross the network in clear text: keep STARTTLS on, "
                          "or relay through a mail server on this host")


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")
