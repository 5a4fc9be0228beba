"""What went wrong before an HTTP answer: the operator's words for it, and why a retry resends the request."""

from __future__ import annotations

import http.client

import requests
import urllib3.exceptions

from wal2http.runtime import ResendReason

CAUSE_CHARS = 200  # of an error's text, part of which the peer may have written


def failure_text(peer: str, error: requests.RequestException) -> str:
    """What went wrong before an answer, in the terms an operator checks first."""
    cause = _innermost(error)
    if isinstance(cause, http.client.RemoteDisconnected):
        return f"the {peer} closed the connection without answering"
    if isinstance(cause, http.client.HTTPException | urllib3.exceptions.ProtocolError):
        return f"the {peer} answered something that is not HTTP/1.1: {cause_text(error)}"
    return f"cannot reach {peer}: {cause_text(error)}"


def resend_reason(error: BaseException) -> ResendReason | None:
    """Why a request that failed with ``error`` is sent again; None when it never reached the peer."""
    causes = _causes(error)

    def any_of(*kinds: type[BaseException]) -> bool:
        return any(isinstance(cause, kinds) for cause in causes)

    if any_of(urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError,
              urllib3.exceptions.NameResolutionError, ConnectionRefusedError):
        return None
    if any_of(http.client.RemoteDisconnected, http.client.IncompleteRead, ConnectionResetError, BrokenPipeError):
        return ResendReason.CONNECTION
    if any_of(http.client.HTTPException):
        return ResendReason.MALFORMED_ANSWER
    if any_of(urllib3.exceptions.ReadTimeoutError, TimeoutError):
        return ResendReason.TIMEOUT
    return ResendReason.CONNECTION


def _causes(error: BaseException, depth: int = 8) -> list[BaseException]:
    """``error`` and everything it wraps: causes, contexts, urllib3's reasons and the error a ProtocolError carries
    (urllib3 hands it to Retry that way, before raising it)."""
    found: list[BaseException] = []
    todo: list[BaseException] = [error]
    while todo and len(found) < depth:
        cause = todo.pop(0)
        if any(cause is seen for seen in found):
            continue
        found.append(cause)
        carried = cause.args[1] if isinstance(cause, urllib3.exceptions.ProtocolError) and len(cause.args) > 1 \
            else None
        todo.extend(e for e in (getattr(cause, "reason", None), carried, cause.__cause__, cause.__context__)
                    if isinstance(e, BaseException))
    return found


def _innermost(error: BaseException) -> BaseException:
    cause = error
    while True:
        inner = getattr(cause, "reason", None) or cause.__context__
        if not isinstance(inner, BaseException) or inner is cause:
            return cause
        cause = inner


def cause_text(error: BaseException) -> str:
    """The innermost cause, without the URL repeated by each wrapping layer; short, the peer wrote part of it."""
    cause = _innermost(error)
    text = str(cause)
    text = text if text and "://" not in text else ""
    if len(text) > CAUSE_CHARS:
        text = text[:CAUSE_CHARS] + "..."
    return type(cause).__name__ + (f": {text}" if text else "")
