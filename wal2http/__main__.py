"""Allow ``python -m wal2http``."""

from wal2http.cli import main

main()
