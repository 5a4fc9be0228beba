"""Backfill: send the rows a table already holds as ``read`` events inside the live stream (DBLog watermarks).

``chunk`` holds the chunk between its watermarks, ``driver`` the work loop the pipeline calls, ``queue``
the operator's requests (queue, list, cancel). The records they share (request states, watermarks, the
table description a chunk needs) are ``wal2http.pg.backfill_model``, beside the statements in
``wal2http.pg.backfill`` (requests), ``backfill_tables`` (describing a table) and ``backfill_chunks``
(chunk selects), so the SQL layer needs nothing from here.
"""
