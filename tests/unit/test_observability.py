"""Metrics arithmetic, health rules, listen addresses; contrib alerts and dashboard against real metric names."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.events import event
from wal2http.config.rules import parse_listen_address
from wal2http.errors import ConfigError
from wal2http.observe.endpoint import liveness, readiness
from wal2http.observe.log import ContextFilter
from wal2http.observe.metrics import Histogram, Metrics
from wal2http.runtime import RunState

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "contrib" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "contrib" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "wal2http.json"
METRIC_RE = re.compile(r"\b((?:wal2http|process)_[a-z_]+)\b")


def exposed(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry()).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample_names() -> set[str]:
    return {name for name, _ in exposed(Metrics())}


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    h = Histogram((1, 5))
    h.observe(1)
    h.observe(3, n=2)
    h.observe(9)
    buckets, total = h.cumulative()
    assert buckets == [("1.0", 1), ("5.0", 3), ("+Inf", 4)]
    assert total == 1 + 6 + 9 and h.count == 4


def test_delivered_counts_every_event_and_its_latency() -> None:
    m = Metrics()
    now_us = 1_000_000_000_000_000
    events = [event(seq=1, commit_time_us=now_us - 2_000_000), event(seq=2, commit_time_us=now_us - 2_000_000),
              event(seq=3, op="update", commit_time_us=now_us - 100_000),
              event(seq=4, op="delete")]  # no commit time: no latency
    m.delivered(events, now_us)
    assert m.events == {"insert": 2, "update": 1, "delete": 1, "truncate": 0, "message": 0, "read": 0}
    assert m.events_delivered == 4 and m.batch_events.count == 1 and m.batch_events.sum == 4
    assert m.commit_to_delivery.count == 3
    assert m.commit_to_delivery.sum == pytest.approx(2.0 * 2 + 0.1)
    samples = exposed(m)
    assert samples[("wal2http_commit_to_delivery_seconds_bucket", (("le", "2.5"),))] == 3
    assert samples[("wal2http_commit_to_delivery_seconds_bucket", (("le", "1.0"),))] == 1
    assert samples[("wal2http_events_total", (("op", "insert"),))] == 2


def test_table_labels_only_when_asked() -> None:
    m = Metrics(table_labels=True)
    table_t = {"schema": "public", "table": "t"}
    m.delivered([event(record=table_t)], 0)
    m.rejected(event(op="delete", record=table_t), dead_lettered=True, reason="422")
    samples = exposed(m)
    assert samples[("wal2http_events_total", (("op", "insert"), ("schema", "public"), ("table", "t")))] == 1
    assert samples[("wal2http_dead_letters_total", ())] == 1
    assert ("wal2http_events_total", (("op", "insert"),)) not in samples


def test_breaker_open_since_spans_half_open_probes() -> None:
    m = Metrics()
    m.set_breaker("open")
    since = m.breaker_open_since
    m.set_breaker("half-open")
    m.set_breaker("open")
    assert since is not None and m.breaker_open_since == since
    m.set_breaker("closed")
    assert m.breaker_open_since is None


def test_liveness_and_readiness() -> None:
    m = Metrics()
    ok, body = readiness(m)
    assert not ok and "not connected to PostgreSQL" in body["reasons"]
    m.set_state(RunState.STREAMING, connected=True)
    assert readiness(m) == (True, {"status": "ready", "state": "streaming", "breaker": "closed", "connected": True})
    m.set_breaker("open")
    assert not readiness(m)[0]
    m.heartbeat = time.monotonic() - 30
    assert liveness(m, stall_s=60)[0]
    ok, body = liveness(m, stall_s=10)
    assert not ok and body["status"] == "stalled"


@pytest.mark.parametrize(("text", "expected"), [
    ("9187", ("127.0.0.1", 9187)), (":9187", ("127.0.0.1", 9187)), ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("[::1]:9187", ("::1", 9187)), ("localhost:1", ("localhost", 1)),
])
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:0", "h:70000", "::1:9187", "h:x"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen_address(text)


def test_context_filter_adds_fields_without_overriding() -> None:
    f = ContextFilter({"slot": "s", "run_id": "r"})
    record = logging.LogRecord("x", logging.INFO, "", 0, "m", None, None)
    record.slot = "own"
    assert f.filter(record)
    assert (record.slot, record.run_id) == ("own", "r")  # type: ignore[attr-defined]


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_alert_rules_are_complete_and_use_real_metrics() -> None:
    """Checked without promtool: structure, and every metric named is one wal2http exposes."""
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)) >= 9
    known = sample_names()
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description", "runbook"} <= rule["annotations"].keys(), rule["alert"]
        assert rule["annotations"]["runbook"] == f"README.rst, Operations: {rule['alert']}"
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        unknown = set(METRIC_RE.findall(rule["expr"])) - known
        assert not unknown, f"{rule['alert']} uses metrics wal2http does not expose: {unknown}"


def test_every_alert_has_a_runbook_in_the_readme() -> None:
    readme = (ROOT / "README.rst").read_text()
    for rule in alert_rules():
        assert re.search(rf"^``{rule['alert']}``$", readme, re.MULTILINE), f"no runbook for {rule['alert']}"


def promtool() -> str | None:
    """promtool beside the test interpreter (``make promtool``) or on PATH."""
    beside = Path(sys.executable).parent / "promtool"
    return str(beside) if beside.is_file() else shutil.which("promtool")


@pytest.mark.skipif(promtool() is None, reason="promtool not installed: `make promtool` (structure is checked above)")
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    for args in (["check", "rules", ALERTS.name], ["test", "rules", ALERT_TESTS.name]):
        result = subprocess.run([str(promtool()), *args], cwd=ALERTS.parent, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_use_real_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "wal2http"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    used = {name for expr in exprs for name in METRIC_RE.findall(expr)}
    assert not used - sample_names()
    family_names = {name.removesuffix("_total") for name in used}
    for required in ("wal2http_events", "wal2http_slot_lag_bytes", "wal2http_breaker_state",
                     "wal2http_commit_to_delivery_seconds_bucket", "wal2http_dead_letters"):
        assert required in family_names
