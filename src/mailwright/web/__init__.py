"""The status page: a small HTTP server (``web.webserver``), its pages and actions
(``web.webapp``, ``web.statuspage``, ``web.plot``), who may see and act (``web.credentials``),
and the snapshots it shows (``web.status``, ``web.history``).

It sits above the queue manager and the edge, and reads what they expose; the daemon builds it.
"""
