"""Mail filters: the ordered chain of milters and in-process Python filters, and the built-ins."""
