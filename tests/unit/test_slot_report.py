"""``slot status`` verdicts: thresholds, WAL reservation, missing slots, the monitoring first line."""

from __future__ import annotations

import pytest

from wal2http.errors import ConfigError
from wal2http.ops.slot_report import Health, Thresholds, as_json, evaluate, render_text, summary
from wal2http.pg.slot import Slot

MB = 1 << 20


def slot(name: str = "wal2http", *, lag: int | None = 0, active: bool = True, wal_status: str = "reserved",
         database: str = "app") -> Slot:
    return Slot(name=name, plugin="pgoutput", database=database, active=active,
                      active_pid=4242 if active else None, application_name="wal2http" if active else None,
                      wal_status=wal_status, restart_lsn=0x16B3748, confirmed_flush_lsn=0x16B3800,
                      lag_bytes=lag, retained_bytes=None if lag is None else lag + 100)


T = Thresholds(warn_lag=512 * MB, crit_lag=2048 * MB, warn_inactive=True)


@pytest.mark.parametrize(
    ("status", "health"),
    [
        (slot(lag=0), Health.OK),
        (slot(lag=512 * MB - 1), Health.OK),
        (slot(lag=512 * MB), Health.WARNING),
        (slot(lag=2048 * MB), Health.CRITICAL),
        (slot(active=False), Health.WARNING),
        (slot(active=False, lag=3000 * MB), Health.CRITICAL),
        (slot(wal_status="extended"), Health.OK),
        (slot(wal_status="unreserved"), Health.CRITICAL),
        (slot(wal_status="lost", lag=None), Health.CRITICAL),
        (slot(lag=None), Health.OK),
    ],
)
def test_health_of_one_slot(status: Slot, health: Health) -> None:
    assert evaluate([status], T, "wal2http", "app").health is health


def test_without_thresholds_only_wal_status_matters() -> None:
    none = Thresholds()
    assert evaluate([slot(lag=10**12, active=False)], none, "wal2http").health is Health.OK
    assert evaluate([slot(wal_status="lost")], none, "wal2http").health is Health.CRITICAL


def test_a_missing_slot_is_critical() -> None:
    report = evaluate([slot("other")], T, "wal2http", "app")
    assert report.health is Health.CRITICAL and report.missing == "wal2http"
    assert summary(report) == "WAL2HTTP CRITICAL - slot wal2http does not exist"


def test_a_slot_of_another_database_is_a_warning() -> None:
    report = evaluate([slot(database="other")], T, "wal2http", "app")
    assert report.health is Health.WARNING
    assert "belongs to database other" in report.verdicts[0].reasons[0]


def test_all_slots_take_the_worst() -> None:
    report = evaluate([slot("a"), slot("b", active=False), slot("c", wal_status="lost")], T, None, "app")
    assert report.health is Health.CRITICAL
    assert [v.health for v in report.verdicts] == [Health.OK, Health.WARNING, Health.CRITICAL]
    assert summary(report).startswith("WAL2HTTP CRITICAL - 3 slots: slot a active, lag 0 B; slot b inactive")
    assert evaluate([], T, None, "app").health is Health.OK


def test_first_line_is_a_plugin_summary_with_perfdata() -> None:
    line = summary(evaluate([slot(lag=1_288_490)], T, "wal2http"))
    assert line == (
        f"WAL2HTTP OK - slot wal2http active, lag 1.2 MB | lag_bytes=1288490B;{512 * MB};{2048 * MB};0 "
        "retained_bytes=1288590B;;;0 active=1;;;0;1"
    )
    several = summary(evaluate([slot("a"), slot("b-c")], Thresholds(), None))
    assert "a_lag_bytes=0B;;;0" in several and "'b-c_lag_bytes'=0B;;;0" in several


def test_text_is_human_and_json_is_raw() -> None:
    report = evaluate([slot(lag=3 * MB, active=False)], T, "wal2http")
    text = "\n".join(render_text(report))
    assert "3.0 MB (3145728 bytes)" in text and "0/16B3800" in text and "inactive: no consumer" in text
    data = as_json(report)
    assert data["status"] == "WARNING" and data["exit_code"] == 1
    assert data["slots"][0]["unconfirmed_bytes"] == 3 * MB
    assert data["slots"][0]["confirmed_flush_lsn"] == "0/16B3800"


def test_warn_above_crit_is_refused() -> None:
    with pytest.raises(ConfigError, match="--warn-lag"):
        Thresholds(warn_lag=2, crit_lag=1)
