"""The HTTP sink: one synchronous POST per batch through one keep-alive session."""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.connectionpool import ConnectionPool
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from wal2http import __version__
from wal2http.config.outcomes import Action, StatusClasses
from wal2http.config.secrets import Secret
from wal2http.config.sections import HttpConfig
from wal2http.config.signing import signing_keys
from wal2http.config.validation import is_loopback
from wal2http.deadline import DeadlineExceeded, deadline
from wal2http.delivery.batch import Batch
from wal2http.delivery.resends import Resends
from wal2http.errors import (
    DeliveryConfigError,
    PayloadTooLarge,
    RejectedError,
    StopRequested,
    TransientDeliveryError,
)
from wal2http.routing.destination import Destination
from wal2http.runtime import ResendReason
from wal2http.sinks.cloudevents import Formatter, Parts, Request
from wal2http.sinks.failures import cause_text, failure_text, resend_reason
from wal2http.sinks.signing import Signer

logger = logging.getLogger(__name__)

BODY_EXCERPT = 200  # characters of an answer quoted in a log line or an error
# Of an answer body, at most this much is kept (for logs and dead letters) ...
ANSWER_KEPT_BYTES = 4096
# ... and at most this much read: a longer body is left unread and its connection closed, so no
# answer costs more memory or time than this, and a short one still keeps the connection alive.
ANSWER_READ_BYTES = 65536
_READ_CHUNK = 8192
REASON_CHARS = 100  # of a status line's reason phrase, which the peer chooses


@dataclass(frozen=True)
class Reply:
    """An answer, of which at most ANSWER_KEPT_BYTES of body were kept (``complete`` if that is all)."""

    status_code: int
    reason: str
    headers: Mapping[str, str]
    content: bytes
    complete: bool
    url: str

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not, or was too long to keep whole."""
        if not self.complete:
            raise ValueError(f"answer longer than {len(self.content)} bytes")
        return json.loads(self.content)


class BearerAuth(AuthBase):
    """``Authorization: Bearer``; being the session's auth also keeps ~/.netrc from replacing it."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth('***')"


class HttpSink:
    """POSTs batches; quick retries inside an attempt, the pipeline retries the rest."""

    def __init__(self, config: HttpConfig, as_array: bool, resends: Resends | None = None,
                 statuses: StatusClasses | None = None) -> None:
        self._config = config
        self._formatter = Formatter(config.format, config.cloudevents, as_array)
        self._parts = Parts()
        self._resends = resends
        self._sending: Batch | None = None  # for resends counted inside a request
        self._statuses = statuses or StatusClasses()
        self._retried = self._statuses.retried
        self._session = new_session(config, on_resend=self._resent if resends is not None else None)
        self._destination = Destination(config.url, config.headers)
        self._session.headers.update({h.name: h.reveal() for h in config.headers})
        if config.bearer_token is not None:
            self._session.auth = BearerAuth(config.bearer_token)
        keys = signing_keys(config.signing_secrets)
        self._signer = Signer(keys) if keys else None
        credentials = config.bearer_token is not None or any(isinstance(h.value, Secret) for h in config.headers)
        warn_if_plain_http(config.url, "--http-url", credentials)

    def send(self, batch: Batch) -> int | None:
        """Send the batch as its format asks: one request, or one per event (cloudevents-binary).

        When one of several requests fails, those accepted before it are not sent again with the batch.
        """
        return self._parts.send(self._formatter.requests(batch), self._post)

    def _post(self, part: Request) -> int:
        batch, body = part.batch, part.body
        webhook_id = batch.batch_id
        timestamp = int(time.time())
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "Idempotency-Key": webhook_id,
            **part.headers,
        }
        if self._signer is not None:
            # Over the very bytes passed to requests, which sends bytes unchanged.
            headers["webhook-signature"] = self._signer.sign(webhook_id, timestamp, body)
        url = self._config.url
        if self._destination.templated:
            # The pipeline never mixes destinations in a batch: the first event names it.
            url, filled = self._destination.of(batch.events[0].record)
            headers.update(filled)
        self._sending = batch
        try:
            response = request(self._session, self._config, "POST", url, body, headers,
                               retry_statuses=self._retried,
                               on_resend=self._resent if self._resends is not None else None)
        finally:
            self._sending = None
        status = response.status_code
        action = self._statuses.action(status)
        if action == Action.ACCEPTED:
            return status
        excerpt = " ".join(response.text[:BODY_EXCERPT].split())  # one line, whatever the peer sent
        if status < 200:
            raise TransientDeliveryError(f"receiver answered {status} {response.reason}, an interim answer, "
                                         "and no final one", status=status, resend_reason=ResendReason.INTERIM)
        if action == Action.SMALLER:
            raise PayloadTooLarge(
                f"receiver answered 413 {response.reason} to {len(batch.events)} event(s) "
                f"({len(body)} bytes) in {webhook_id}" + (f"; body: {excerpt}" if excerpt else ""),
                status=status, event_id=webhook_id, body=excerpt,
            )
        if action == Action.RETRY:
            raise TransientDeliveryError(
                f"receiver answered {status} {response.reason}",
                status=status,
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
                resend_reason=ResendReason.STATUS,
            )
        if action == Action.HALT:
            raise DeliveryConfigError(
                f"receiver answered {status} {response.reason} for {webhook_id}: "
                "check the receiver URL and credentials" + (f"; body: {excerpt}" if excerpt else ""),
                status=status, event_id=webhook_id, body=excerpt,
            )
        raise RejectedError(
            f"receiver rejected {webhook_id} with {status} {response.reason}"
            + (f"; body: {excerpt}" if excerpt else ""),
            status=status, event_id=webhook_id, body=excerpt,
        )

    def _resent(self, reason: ResendReason, cause: str) -> None:
        """A request is sent again inside ``request`` (urllib3's retry, or a quick retry of a status)."""
        batch = self._sending
        if self._resends is not None and batch is not None:
            self._resends.resent(reason, len(batch.events), batch.batch_id, cause)

    def close(self) -> None:
        self._session.close()


OnResend = Callable[[ResendReason, str], None]


class CountingRetry(Retry):
    """urllib3's Retry, telling ``on_resend`` when it sends a request again that may have reached the peer."""

    on_resend: OnResend | None = None

    def new(self, **kw: Any) -> CountingRetry:
        retry = super().new(**kw)
        retry.on_resend = self.on_resend
        return retry

    def increment(self, method: str | None = None, url: str | None = None,
                  response: BaseHTTPResponse | None = None, error: Exception | None = None,
                  _pool: ConnectionPool | None = None, _stacktrace: TracebackType | None = None) -> CountingRetry:
        retry = super().increment(method, url, response, error, _pool, _stacktrace)  # raises when none is left
        if self.on_resend is not None and error is not None and not self._is_connection_error(error):
            # A connect error sent nothing; any other error came after the request was (maybe) sent.
            self.on_resend(resend_reason(error) or ResendReason.CONNECTION, cause_text(error))
        return retry


def new_session(config: HttpConfig, on_resend: OnResend | None = None) -> requests.Session:
    """One keep-alive session; urllib3 retries only what costs no answer body (see ``request``).

    ``on_resend`` hears of each request urllib3 sends again after it may have reached the peer.
    """
    retry = CountingRetry(
        total=config.retries,
        connect=config.retries,
        # Once: a keep-alive connection the peer closed just as it was reused fails before any
        # answer; a fresh connection is the cure. Anything slower is bounded by the deadline.
        read=1,
        status=0,  # statuses are retried by request(), which reads bounded bodies (urllib3 drains them)
        other=0,
        allowed_methods=None,  # POST is safe to repeat: ids make deliveries idempotent
        backoff_factor=0.1,
        backoff_max=2.0,
        respect_retry_after_header=False,
        raise_on_status=False,
        raise_on_redirect=False,
        redirect=0,
    )
    retry.on_resend = on_resend
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_connections=1, pool_maxsize=1)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # identity: an answer excerpt is read as sent, never inflated from a compressed body.
    session.headers.update({"Content-Type": "application/json", "User-Agent": f"wal2http/{__version__}",
                            "Accept-Encoding": "identity"})
    _settle_environment(session, config.url)
    return session


def _settle_environment(session: requests.Session, url: str) -> None:
    """Read what requests takes from the environment once, instead of on every request.

    With ``trust_env`` requests looks up the proxy variables, ``no_proxy``, the CA bundle
    variables and ``~/.netrc`` for each request: a third of the CPU time of a small POST
    (measured: 400 against 280 us). Resolved here for the URL the session posts to (proxy
    choice depends only on its host), they apply to every request exactly as before; the
    environment does not change under a running process. An auth the caller sets afterwards
    replaces the ~/.netrc one, as it did per request.
    """
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies.update(settings["proxies"])
    session.verify = settings["verify"]  # REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else True
    netrc_auth = requests.utils.get_netrc_auth(url)
    if netrc_auth is not None:
        session.auth = netrc_auth
    session.trust_env = False


def request(session: requests.Session, config: HttpConfig, method: str, url: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, params: dict[str, str] | None = None,
            peer: str = "receiver", retry_statuses: frozenset[int] = frozenset(),
            keep: int = ANSWER_KEPT_BYTES, on_resend: OnResend | None = None) -> Reply:
    """One request within ``--http-timeout`` in all, quick retries of ``retry_statuses`` included.

    Redirects are not followed. At most ``keep`` bytes of the answer are kept and
    ANSWER_READ_BYTES read. Failures to get an answer become TransientDeliveryError, with the
    reason trying again would resend the request (None when it never left). ``on_resend`` hears
    of each quick retry of a status.
    """
    try:
        with deadline(config.timeout_s):
            started = time.monotonic()
            retries = config.retries if retry_statuses else 0
            for attempt in range(retries + 1):
                reply = _exchange(session, config, method, url, body, headers, params, keep)
                if reply.status_code not in retry_statuses or attempt == retries:
                    return reply
                pause = retry_after_seconds(reply.headers.get("Retry-After"))
                if pause is None:
                    pause = random.uniform(0, 0.1 * 2 ** (attempt + 1))
                if started + config.timeout_s - time.monotonic() <= min(pause, config.retry_after_max_s) + 0.1:
                    return reply  # no time left for another try: the caller retries later
                time.sleep(min(pause, config.retry_after_max_s))
                if on_resend is not None:
                    on_resend(ResendReason.STATUS, f"{peer} answered {reply.status_code}")
            raise AssertionError("unreachable")
    except DeadlineExceeded as e:
        session.close()  # the connection may be mid-answer: never reuse it
        if e.stopping:  # --shutdown-timeout is up: nothing of this batch is confirmed
            raise StopRequested(f"stopped waiting for the {peer}: --shutdown-timeout is up") from None
        raise TransientDeliveryError(f"{peer} did not answer within {config.timeout_s:g} s "
                                     "(--http-timeout)", resend_reason=ResendReason.TIMEOUT) from None
    except requests.ConnectTimeout as e:
        raise TransientDeliveryError(f"{peer} timed out: {cause_text(e)}") from None
    except requests.Timeout as e:
        raise TransientDeliveryError(f"{peer} timed out: {cause_text(e)}", resend_reason=ResendReason.TIMEOUT) from None
    except requests.RequestException as e:
        raise TransientDeliveryError(failure_text(peer, e), resend_reason=resend_reason(e)) from None
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as e:
        session.close()
        raise TransientDeliveryError(f"the connection to the {peer} broke mid-answer: {cause_text(e)}",
                                     resend_reason=resend_reason(e) or ResendReason.CONNECTION) from None


def _exchange(session: requests.Session, config: HttpConfig, method: str, url: str, body: bytes | None,
              headers: dict[str, str] | None, params: dict[str, str] | None, keep: int) -> Reply:
    response = session.request(
        method,
        url,
        data=body,
        headers=headers,
        params=params,
        # Per socket operation, a backstop: the deadline around this bounds the whole request.
        timeout=(min(config.connect_timeout_s, config.timeout_s), config.timeout_s),
        allow_redirects=False,
        stream=True,  # the body is read here, bounded
        # Per request, so REQUESTS_CA_BUNDLE (read into session.verify) cannot replace an
        # explicit --ca-file.
        verify=config.ca_file or session.verify,
        cert=client_certificate(config),
    )
    try:
        status = response.status_code
        content, complete = (b"", True) if status < 200 else _read_body(response, keep)
    finally:
        # After a whole body the connection is back in the pool and this closes nothing; else
        # (an interim 1xx, a body too long, an error) it closes the connection.
        response.close()
    return Reply(status, (response.reason or "")[:REASON_CHARS], response.headers, content, complete,
                 response.url)


def _read_body(response: requests.Response, keep: int) -> tuple[bytes, bool]:
    """The first ``keep`` bytes of the body, and whether that is all of it."""
    raw = response.raw
    kept = bytearray()
    read = 0
    limit = max(keep, ANSWER_READ_BYTES)
    while read <= limit:
        chunk = raw.read(_READ_CHUNK, decode_content=False)
        if not chunk:
            return bytes(kept), read <= keep
        if len(kept) < keep:
            kept += chunk[: keep - len(kept)]
        read += len(chunk)
    return bytes(kept), False


def client_certificate(config: HttpConfig) -> str | tuple[str, str] | None:
    if config.client_cert and config.client_key:
        return (config.client_cert, config.client_key)
    return config.client_cert


def tls_context(config: HttpConfig) -> ssl.SSLContext:
    """The TLS set-up of ``run``'s requests, for a handshake made without them (check-config's probe): the
    receiver verified against --ca-file, else against the bundle requests trusts (REQUESTS_CA_BUNDLE,
    CURL_CA_BUNDLE or certifi's), and the --client-cert presented. OSError or ssl.SSLError if a file
    cannot be loaded."""
    verify = config.ca_file or requests.Session().merge_environment_settings(config.url, {}, None, None, None)["verify"]
    trusted = verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH
    context = (ssl.create_default_context(capath=trusted) if os.path.isdir(trusted)
               else ssl.create_default_context(cafile=trusted))
    cert = client_certificate(config)
    if isinstance(cert, tuple):
        context.load_cert_chain(*cert)
    elif cert:
        context.load_cert_chain(cert)
    return context


def warn_if_plain_http(url: str, option: str, credentials: bool) -> None:
    """Warn at start when requests (and any credentials) would cross the network unencrypted."""
    parts = urlsplit(url)
    if parts.scheme != "http" or is_loopback(parts.hostname or ""):
        return
    logger.warning("%s uses plain http:// to %s: events%s cross the network unencrypted; use https://",
                   option, parts.hostname, " and credentials" if credentials else "")


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
