"""The whole configuration of a command: one frozen tree, built once from the options."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

from wal2http.config import signing
from wal2http.config.dsn import dsn_secret_values
from wal2http.config.hook0 import Hook0Config
from wal2http.config.routing import RoutingConfig
from wal2http.config.secrets import Secret
from wal2http.config.sections import (
    BackfillConfig,
    BatchConfig,
    DeliveryConfig,
    HttpConfig,
    LogConfig,
    MetricsConfig,
    NotifyConfig,
    SinkKind,
    SourceConfig,
)


@dataclass(frozen=True)
class SinkConfig:
    kind: SinkKind = SinkKind.STDOUT
    http: HttpConfig | None = None
    file_path: str | None = None
    hook0: Hook0Config | None = None


@dataclass(frozen=True)
class Config:
    source: SourceConfig
    sink: SinkConfig = field(default_factory=SinkConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    backfill: BackfillConfig = field(default_factory=BackfillConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)

    def secrets(self) -> list[str]:
        """Every secret value in every form it may be printed in, for the logging filter."""
        values: list[str] = []
        for secret in _secrets_in(self):
            value = secret.reveal()
            if secret is self.source.dsn:
                # Only its passwords: a DSN without one is not secret, and shows in messages.
                forms = dsn_secret_values(value)
            else:
                forms = [value, unquote(value)]
                if value.startswith(signing.SECRET_PREFIX):
                    forms.append(value[len(signing.SECRET_PREFIX) :])
            values.extend(f for f in forms if f and f not in values)
        return values


def _secrets_in(value: object) -> Iterator[Secret]:
    """Every Secret inside a tree of dataclasses and tuples, so a new secret field needs no registration."""
    if isinstance(value, Secret):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _secrets_in(getattr(value, f.name))
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _secrets_in(item)
