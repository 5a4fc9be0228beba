"""``make bench``: throughput, latency and memory of wal2http against pg_recvlogical."""
