"""Getting batches accepted: batching, retries and the circuit breaker, dead letters, the position to confirm."""
