"""The Hook0 feature: settings, mapping rows to Hook0 events, the sink, the API, the outbox and its checks."""
