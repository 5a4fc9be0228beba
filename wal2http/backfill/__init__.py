"""Backfill: send the rows a table already holds as ``read`` events inside the live stream (DBLog watermarks).

``model`` holds the pure records (requests, watermarks, the table description a chunk needs),
``chunk`` the chunk between its watermarks, ``driver`` the work loop the pipeline calls; every
statement is in ``wal2http.pg.backfill``.
"""
