"""What the daemon tells its operator: mail log lines, metrics, the status page."""
