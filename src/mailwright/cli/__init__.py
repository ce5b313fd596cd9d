"""Command-line programs: the ``mailwright`` admin CLI and the Sendmail-compatible front ends."""
