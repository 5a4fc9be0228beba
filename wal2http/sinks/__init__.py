"""Where events go: the generic sinks (JSON lines, HTTP) behind ``delivery.sink.Sink``; Hook0 builds on them."""
