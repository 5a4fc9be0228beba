"""What operators see of a run, driven from the main thread: slot polls, progress lines, notifications."""

from __future__ import annotations

import logging
import socket
import time
from types import FrameType

from wal2http.config.settings import Config
from wal2http.errors import Wal2HttpError
from wal2http.lsn import format_lsn
from wal2http.observe import log as log_setup
from wal2http.observe.endpoint import AdminServer
from wal2http.observe.metrics import Metrics
from wal2http.observe.notify import Notifier
from wal2http.pg.monitor import SlotMonitor

logger = logging.getLogger(__name__)


class Observer:
    """Owns the metrics, the admin endpoint, the slot monitor and the notifier of one run.

    ``tick()`` is called by the main loop whenever it passes by (after a batch, when idle,
    every second while waiting): it records the heartbeat /healthz reads, and does whatever
    periodic duty is due. It is cheap when nothing is due.
    """

    def __init__(self, config: Config, metrics: Metrics | None = None, *, run_id: str = "") -> None:
        self.config = config
        self.metrics = metrics or Metrics(config.metrics.table_labels)
        m, lg, n = config.metrics, config.log, config.notify
        self.slot = config.source.slot
        self.monitor = (SlotMonitor(config.source.dsn.reveal(), config.source.slot,
                                    require_tls=config.source.require_tls)
                        if m.slot_poll_s > 0 and config.source.dsn else None)
        self.poll_s = m.slot_poll_s
        self.progress_s = lg.progress_s
        self.notifier = (Notifier(n, f"host {socket.gethostname()}, slot {self.slot}, run {run_id}",
                                  config.secrets())
                         if n.smtp_host else None)
        self.notify_after_s = n.notify_after_s
        self.notify_interval_s = n.interval_s
        self.reopen_requested = False
        self.admin: AdminServer | None = None
        now = time.monotonic()
        self._next_poll = now
        self._next_progress = now + self.progress_s
        self._progress_base = (now, 0, 0)
        self._poll_failing = False
        self._breaker_notified = False
        self._dead_letters_notified = 0
        self._last_dead_letter_mail = -float("inf")

    def start_admin(self) -> None:
        """Listen on --metrics-addr, if set; raises ConfigError when the address cannot be bound."""
        m = self.config.metrics
        if m.address is not None:
            self.admin = AdminServer(m.address, self.metrics, m.health_stall_s, m.token)

    def request_log_reopen(self, _signum: int, _frame: FrameType | None = None) -> None:
        """SIGHUP handler: the next tick reopens the log file (never inside a signal handler)."""
        self.reopen_requested = True

    def close(self) -> None:
        if self.admin is not None:
            self.admin.close()
        if self.monitor is not None:
            self.monitor.close()

    # -- the main loop's periodic duties --------------------------------------------

    def tick(self) -> None:
        now = time.monotonic()
        self.metrics.heartbeat = now
        if self.reopen_requested:
            self.reopen_requested = False
            if log_setup.reopen():
                logger.info("log file reopened (SIGHUP)")
        if self.monitor is not None and now >= self._next_poll:
            self._poll(now)
        if self.progress_s > 0 and now >= self._next_progress:
            self._progress(now)
        if self.notifier is not None:
            self._notify(now)

    def _poll(self, now: float) -> None:
        assert self.monitor is not None
        try:
            stats = self.monitor.poll()
        except Wal2HttpError as e:
            self.metrics.errors["slot_poll"] += 1
            self.metrics.set_slot(None, None, None, None)
            if not self._poll_failing:
                logger.warning("slot monitoring failed: %s; retrying every %.0f s", e, self.poll_s)
                self._poll_failing = True
        else:
            if self._poll_failing:
                logger.info("slot monitoring works again")
                self._poll_failing = False
            if stats is None:
                self.metrics.set_slot(None, None, None, None)
            else:
                self.metrics.set_slot(stats.lag_bytes, stats.retained_bytes, stats.safe_wal_size, stats.wal_status)
        # From the end of this poll: a slow server is not polled back to back.
        self._next_poll = time.monotonic() + self.poll_s

    def _progress(self, now: float) -> None:
        m = self.metrics
        since, delivered_before, requests_before = self._progress_base
        requests = sum(m.deliveries.values())
        delivered = m.events_delivered - delivered_before
        rate = delivered / max(now - since, 1e-9)
        lag = m.slot_lag_bytes
        logger.info(
            "progress: %d events delivered (%.1f/s) in %d requests, %d dead letters, slot lag %s, "
            "confirmed %s, %s, breaker %s",
            delivered, rate, requests - requests_before, m.dead_letters,
            "unknown" if lag is None else f"{int(lag)} bytes", format_lsn(m.confirmed_lsn), m.state,
            m.breaker_state,
            extra={"events_delivered": delivered, "events_per_s": round(rate, 1),
                   "requests": requests - requests_before, "lag_bytes": None if lag is None else int(lag),
                   "confirmed_lsn": format_lsn(m.confirmed_lsn), "state": m.state,
                   "breaker": m.breaker_state},
        )
        self._progress_base = (now, m.events_delivered, requests)
        self._next_progress = now + self.progress_s

    # -- notifications ----------------------------------------------------------------

    def _notify(self, now: float) -> None:
        assert self.notifier is not None
        m = self.metrics
        since = m.breaker_open_since
        if since is not None and not self._breaker_notified and now - since >= self.notify_after_s:
            self._breaker_notified = True
            self.notifier.send(
                f"receiver failing for {now - since:.0f} s, circuit breaker {m.breaker_state}",
                f"wal2http cannot deliver to the receiver: the circuit breaker opened {now - since:.0f} s ago "
                f"and is still {m.breaker_state}. Nothing is lost: changes wait in the replication slot, "
                f"whose WAL grows on the PostgreSQL server (lag: {_bytes(m.slot_lag_bytes)}).\n"
                "Check the receiver; wal2http resumes by itself once it answers again.")
        elif since is None and self._breaker_notified:
            self._breaker_notified = False
            self.notifier.send("receiver recovered", "The receiver accepts events again; the circuit "
                               "breaker is closed and wal2http is catching up.")
        new = m.dead_letters - self._dead_letters_notified
        if new > 0 and now - self._last_dead_letter_mail >= self.notify_interval_s:
            self._dead_letters_notified = m.dead_letters
            self._last_dead_letter_mail = now
            self.notifier.send(
                f"{new} event{'s' if new != 1 else ''} dead-lettered",
                f"The receiver refused {new} event{'s' if new != 1 else ''} for good since the last "
                f"notification ({m.dead_letters} in this run); they were written to "
                f"{self.config.delivery.dead_letter_path}.\nLast one: {m.last_rejection}\n"
                "Fix the receiver or the data, then send them again with 'wal2http replay'. "
                f"Further dead letters are summarised at most every {self.notify_interval_s:.0f} s.")

    def halted(self, error: BaseException) -> None:
        """The run stops on an error: tell the operator (the process is exiting, blocking is harmless)."""
        self.metrics.errors["fatal"] += 1
        if self.notifier is None:
            return
        kind = type(error).__name__
        text = str(error) if isinstance(error, Wal2HttpError) else f"unexpected error: {kind}: {error}"
        self.notifier.send("stopped on an error",
                           f"wal2http stopped: {text}\n\nConfirmed position: {format_lsn(self.metrics.confirmed_lsn)}. "
                           "Nothing after it is lost: it is sent again once wal2http runs again.")


def _bytes(value: float | None) -> str:
    return "unknown" if value is None else f"{int(value)} bytes"
