"""What operators see of a run: metrics, the admin endpoint, logs and email notifications."""
