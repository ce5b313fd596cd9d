"""The network edge: listeners, sessions, connection limits.

The only code that reads client sockets.
"""
