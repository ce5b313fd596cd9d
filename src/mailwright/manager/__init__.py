"""The queue manager: what is due, how it is expanded and delivered, and what is answered.

It sits above the durable queue (``mailwright.queue``), routing, policy and delivery:
the scheduler (``manager.scheduler``) claims due recipients from the store, expands local
ones (``manager.expansion``), hands the rest to delivery agents, remembers per-host state
(``manager.hoststatus``), computes retry times (``manager.backoff``) and answers LMTP
clients waiting for local deliveries (``manager.answers``).
"""
