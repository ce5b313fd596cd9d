"""What the launcher prepared for the daemon before it started (``daemon.launch``).

Everything is optional: a ``Daemon`` built without it (tests, ``sendmail -bD`` of old)
binds its own sockets, has no helper, and notifies nobody; without a ``worker`` role it is
the daemon's only process. Pure data; reads no settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mailwright.daemon.bindings import Bindings
from mailwright.daemon.notify import Notifier
from mailwright.edge.standby import WorkerStandby
from mailwright.manager.slots import WorkerSlots
from mailwright.policy.sharedlimits import WorkerShare
from mailwright.privhelper.client import HelperClient


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """This process is worker ``index`` of ``count`` under a supervisor
    (``daemon.supervisor``). Worker 0 alone runs what must exist once: the control socket,
    the metrics and status endpoint, the local submission socket and the maildrop pickup."""

    index: int
    count: int

    @property
    def first(self) -> bool:
        return self.index == 0


@dataclass(slots=True)
class Runtime:
    config_path: Path | None = None  # the file SIGHUP reads again (None: built-in defaults)
    bindings: Bindings | None = None  # listening sockets bound before root was given up
    helper: HelperClient | None = None  # the privileged helper, when the daemon gave up root
    notifier: Notifier = field(default_factory=Notifier)  # sd_notify / the waiting parent
    log_level: str | None = None  # --log-level, which outranks [log] level on reload too
    detached: bool = False  # --daemon: no stderr, logs go to syslog
    worker: WorkerRole | None = None  # None: the one process (server.workers = 1)
    share: WorkerShare | None = None  # counters shared with the other workers (None: one process)
    standby: WorkerStandby | None = None  # which workers listen now (None: one process)
    delivery_slots: WorkerSlots | None = None  # the daemon's delivery limits, across workers
