"""The HTTP sink: one synchronous POST per batch through one keep-alive session."""

from __future__ import annotations

import email.utils
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.util.retry import Retry

from wal2http import __version__
from wal2http.config.secrets import Secret
from wal2http.config.sections import HttpConfig
from wal2http.config.validation import is_loopback
from wal2http.delivery.batch import Batch
from wal2http.errors import DeliveryConfigError, RejectedError, TransientDeliveryError
from wal2http.sinks.signing import Signer, signing_keys

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 425, 429, *range(500, 600)})
CONFIGURATION_STATUSES = frozenset({401, 403, 404, 410})
BODY_EXCERPT = 200


class _CappedRetry(Retry):
    """urllib3 Retry whose ``Retry-After`` wait is capped, so a receiver cannot stall us."""

    # Not urllib3's own retry_after_max (2.6+ only, and an int): ours works on every 2.x.
    retry_after_cap = 5.0

    def new(self, **kw: Any) -> _CappedRetry:
        retry = super().new(**kw)
        retry.retry_after_cap = self.retry_after_cap
        return retry

    def get_retry_after(self, response: Any) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, self.retry_after_cap)


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

    def __init__(self, config: HttpConfig, as_array: bool) -> None:
        self._config = config
        self._as_array = as_array
        self._session = new_session(config)
        self._session.headers.update({h.name: h.reveal() for h in config.headers})
        if config.bearer_token is not None:
            self._session.auth = BearerAuth(config.bearer_token)
        keys = signing_keys(config.signing_secrets)
        self._signer = Signer(keys) if keys else None
        credentials = config.bearer_token is not None or any(isinstance(h.value, Secret) for h in config.headers)
        warn_if_plain_http(config.url, "--http-url", credentials)

    def send(self, batch: Batch) -> int:
        body = batch.body(self._as_array)
        webhook_id = batch.batch_id
        timestamp = int(time.time())
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "Idempotency-Key": webhook_id,
        }
        if self._signer is not None:
            # Over the very bytes passed to requests, which sends bytes unchanged.
            headers["webhook-signature"] = self._signer.sign(webhook_id, timestamp, body)
        response = request(self._session, self._config, "POST", self._config.url, body, headers)
        status = response.status_code
        if 200 <= status < 300:
            return status
        excerpt = response.text[:BODY_EXCERPT].strip()
        if status in RETRYABLE_STATUSES:
            raise TransientDeliveryError(
                f"receiver answered {status} {response.reason}",
                status=status,
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        if status in CONFIGURATION_STATUSES:
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

    def close(self) -> None:
        self._session.close()


def new_session(config: HttpConfig, statuses: frozenset[int] = RETRYABLE_STATUSES) -> requests.Session:
    """One keep-alive session with quick urllib3 retries of ``statuses`` inside an attempt."""
    retry = _CappedRetry(
        total=config.retries,
        connect=config.retries,
        read=0,  # a slow receiver is retried by the pipeline, which keeps PostgreSQL informed
        status=config.retries,
        other=0,
        allowed_methods=None,  # POST is safe to repeat: ids make deliveries idempotent
        status_forcelist=statuses,
        backoff_factor=0.1,
        backoff_max=2.0,
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
        redirect=0,
    )
    retry.retry_after_cap = config.retry_after_max_s
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_connections=1, pool_maxsize=1)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"Content-Type": "application/json", "User-Agent": f"wal2http/{__version__}"})
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
            peer: str = "receiver") -> requests.Response:
    """One request without following redirects; network failures become TransientDeliveryError."""
    try:
        return session.request(
            method,
            url,
            data=body,
            headers=headers,
            params=params,
            timeout=(config.connect_timeout_s, config.read_timeout_s),
            allow_redirects=False,
            # Per request, so REQUESTS_CA_BUNDLE (read into session.verify) cannot replace an
            # explicit --ca-file.
            verify=config.ca_file or session.verify,
            cert=client_certificate(config),
        )
    except requests.Timeout as e:
        raise TransientDeliveryError(f"{peer} timed out: {_reason(e)}") from None
    except requests.RequestException as e:
        raise TransientDeliveryError(f"cannot reach {peer}: {_reason(e)}") from None


def client_certificate(config: HttpConfig) -> str | tuple[str, str] | None:
    if config.client_cert and config.client_key:
        return (config.client_cert, config.client_key)
    return config.client_cert


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


def _reason(error: requests.RequestException) -> str:
    """The innermost cause, without the URL repeated by each wrapping layer."""
    cause: BaseException = error
    while True:
        inner = getattr(cause, "reason", None) or cause.__context__
        if not isinstance(inner, BaseException) or inner is cause:
            break
        cause = inner
    return type(cause).__name__ + (f": {cause}" if str(cause) and "://" not in str(cause) else "")
