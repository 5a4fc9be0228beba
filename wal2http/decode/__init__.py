"""Pure decoding: pgoutput bytes to protocol messages, PostgreSQL text to JSON values."""
