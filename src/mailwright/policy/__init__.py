"""Decisions during the SMTP dialogue: the per-stage hook pipeline and the built-in policies.

Milters (later) and built-in checks run through the same pipeline, in order.
"""
