"""What the daemon tells its operator: mail log lines, metrics, recent events, log targets.

The status page that shows them lives in ``mailwright.web``.
"""
