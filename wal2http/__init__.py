"""wal2http: stream PostgreSQL logical replication changes to HTTP endpoints."""

__version__ = "0.2.0"
