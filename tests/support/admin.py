"""A client of one wal2http process's admin endpoint (--metrics-addr): metrics, health, readiness."""

from __future__ import annotations

from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import HOST

__all__ = ["Admin", "Samples", "admin_args"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Admin:
    """Client of the admin endpoint of one wal2http process."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.base = f"http://{HOST}:{port}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str) -> requests.Response:
        return requests.get(self.base + path, headers=self.headers, timeout=10)

    def scrape(self) -> Samples:
        response = self.get("/metrics")
        assert response.status_code == 200, response.text
        samples: Samples = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def value(self, name: str, **labels: str) -> float:
        return self.scrape()[(name, tuple(sorted(labels.items())))]

    def status(self, path: str) -> tuple[int, dict[str, Any]]:
        response = self.get(path)
        return response.status_code, response.json()


def admin_args(port: int, *extra: str) -> tuple[str, ...]:
    return ("--metrics-addr", f"{HOST}:{port}", "--slot-poll-seconds", "1", *extra)
