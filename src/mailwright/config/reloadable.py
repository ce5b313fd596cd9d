"""Which settings a reload (SIGHUP) applies and which need a restart.

The listeners, the number of worker processes, the queue directory and store
(``queue.backend``, ``postgresql``, ``postgresql_password_file``: opened once), the local socket
and maildrop, the cluster node's name and heartbeat, the service account, the delivery
mode and the delivery concurrency limits (the scheduler's loop and semaphores are made
once) are kept as they were:
changing them needs a restart. Used by the daemon's reload and by the privileged
helper, which must agree. Reads the ``Settings`` given.
"""

from __future__ import annotations

from mailwright.config.schema import Settings

# how the scheduler runs (its loop, its semaphores): made once, at start-up
RESTART_DELIVERY = ("mode", "max_concurrency", "max_per_destination")
# where the queue is: the store is opened once, at start-up
RESTART_QUEUE = ("directory", "backend", "postgresql", "postgresql_password_file")


def effective_settings(old: Settings, new: Settings) -> tuple[Settings, list[str]]:
    """``new`` with the settings that need a restart kept as they are; and their names."""
    kept: list[str] = []
    update: dict[str, object] = {}
    if new.listeners != old.listeners:
        kept.append("listeners")
        update["listeners"] = old.listeners
    queue = {k: getattr(old.queue, k) for k in RESTART_QUEUE}
    if changed := [k for k, v in queue.items() if getattr(new.queue, k) != v]:
        kept.append("queue." + "/".join(changed))
        update["queue"] = new.queue.model_copy(update=queue)
    local = {k: getattr(old.local, k) for k in ("socket", "maildrop")}
    if any(getattr(new.local, k) != v for k, v in local.items()):
        kept.append("local.socket/local.maildrop")
        update["local"] = new.local.model_copy(update=local)
    service = {k: getattr(old.service, k) for k in ("user", "group", "pid_file")}
    if any(getattr(new.service, k) != v for k, v in service.items()):
        kept.append("service.user/group/pid_file")
        update["service"] = new.service.model_copy(update=service)
    delivery = {k: getattr(old.delivery, k) for k in RESTART_DELIVERY}
    if any(getattr(new.delivery, k) != v for k, v in delivery.items()):
        kept.append("delivery.mode/max_concurrency/max_per_destination")
        update["delivery"] = new.delivery.model_copy(update=delivery)
    if new.cluster != old.cluster:  # the heartbeat is started once, under this name
        kept.append("cluster")
        update["cluster"] = old.cluster
    if new.server.workers != old.server.workers:  # the supervisor forked them at start
        kept.append("server.workers")
        update["server"] = new.server.model_copy(update={"workers": old.server.workers})
    return (new.model_copy(update=update) if update else new), kept
