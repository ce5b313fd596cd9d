"""The supervisor of a daemon of several worker processes (``server.workers`` > 1).

``daemon.launch`` binds the listeners and the local socket (as root), starts one
privileged helper per worker and gives up root, as for one process; then this
supervisor forks the workers. Each worker is the whole daemon of ``daemon.app``
(sessions, commits, scheduling and delivery) on the shared listening sockets and the
shared queue store: SQLite serialises their write transactions, leases keep two workers
from delivering one recipient, queue ids are partitioned (``core.queueid``). Worker 0
also runs what must exist once: the control socket, the status endpoint, the local
submission socket and the maildrop pickup (``daemon.runtime.WorkerRole``).
``docs/architecture.md`` says why this shape was chosen and what was measured.

The supervisor keeps the sockets, the helpers' channels and the queue's master lock, and
runs no event loop: it waits for signals and for the workers' readiness pipes.

- Start: every worker must say it is ready (``READY=1`` follows the last one); a worker
  that fails to start stops the others and its exit status is the daemon's.
- A worker that dies is started again on the same sockets and helper channel. Its
  clients see their connection close (nothing they were not told 250 for was kept);
  the recipients it was delivering are released at once by its successor (their lease
  names a dead process) or by expiry. Repeated deaths soon after start back off
  (1 s doubling to a minute). A worker that exits with EX_CONFIG or EX_TEMPFAIL (its
  helper was lost: only a restart as root brings a new one) stops the daemon with that
  status, for the service manager to restart.
- SIGHUP: the configuration is read and checked here first; refused, nothing changes
  anywhere; accepted, every worker reloads (and a worker started later uses it).
- SIGTERM, SIGINT: every worker drains and stops; a second one makes them exit at once.
- SIGUSR1: the log file is reopened here and in every worker.
- Delivery limits: ``delivery.max_concurrency`` and ``max_per_destination`` hold for the
  daemon (``manager.slots.SharedSlots``, made here before the fork, read at start only).
- Recent events: each worker records its bounces and warnings in its rings of one
  ``observability.recent.SharedRecent``, made here before the fork, so that worker 0's
  status page shows every worker's.
- SIGUSR2 (from worker 0, after a flush or a release through the control socket): every
  worker's scheduler looks at the queue now.

- CPUs: with ``server.cpu_affinity = "auto"`` (the default) worker N runs on the Nth CPU
  the supervisor may run on, round robin (``_pin``), while every worker listens; ``"none"``
  leaves them to the kernel.
- Listening: worker 0 alone while the daemon has one connection open or none, every
  worker from the second (``edge.standby``, made here before the fork). When a worker
  dies the supervisor makes every worker listen, until worker 0 is back and sees the
  daemon idle.

Settings: ``server.workers`` and ``server.cpu_affinity`` (read at start only) and,
through the workers, all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import time
from dataclasses import dataclass, replace
from types import FrameType

from mailwright.config.loader import ConfigError
from mailwright.config.schema import CpuAffinity, Settings
from mailwright.core import process
from mailwright.core.sysexits import ExitCode
from mailwright.daemon import reload
from mailwright.daemon.app import Daemon, run_daemon
from mailwright.daemon.generation import check_generation
from mailwright.daemon.notify import Notifier
from mailwright.daemon.runtime import Runtime, WorkerRole
from mailwright.edge.standby import Standby
from mailwright.manager.slots import SharedSlots
from mailwright.observability import logtargets, metrics
from mailwright.observability.recent import RECENT, ErrorLog, SharedRecent
from mailwright.policy.sharedlimits import SharedState
from mailwright.privhelper.client import HelperClient, reap
from mailwright.queue.backend import clears_all_leases, queue_store
from mailwright.queue.store import StoreError

log = logging.getLogger("mailwright.daemon")

SIGNALS = (
    signal.SIGCHLD,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
STEADY = 10.0  # a worker that ran this long died of something else than its start-up
MAX_BACKOFF = 60.0


@dataclass
class Slot:
    """One worker's place: its helper channel stays across restarts."""

    index: int
    helper: HelperClient | None
    pid: int = 0
    started: float = 0.0
    ready: bool = False
    ready_fd: int | None = None  # the read end of its readiness pipe
    quick_deaths: int = 0
    restart_at: float | None = None


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        helpers: list[HelperClient | None],
        share: SharedState | None = None,
        recent: SharedRecent | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.slots = [Slot(i, helper) for i, helper in enumerate(helpers)]
        # the counters the workers share (connections, rates, AUTH failures)
        self.share = share or SharedState.create(len(self.slots))
        # every worker's recent bounces and warnings, for worker 0's status page
        self.recent = recent or SharedRecent(len(self.slots))
        # which workers listen: worker 0 alone until it has company (edge.standby)
        self.standby = Standby(len(self.slots))
        # the daemon's delivery limits, held across workers (read at start only)
        d = settings.delivery
        self.deliveries = SharedSlots.create(
            len(self.slots), d.max_concurrency, d.max_per_destination
        )
        self.exit_code: int = ExitCode.OK
        self._stopping = 0  # stop signals seen
        self._started = False  # every worker was ready once
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pid = os.getpid()
        # the CPUs worker N may take the Nth of (server.cpu_affinity, read at start only)
        pinned = settings.server.cpu_affinity is CpuAffinity.AUTO
        self._cpus = sorted(os.sched_getaffinity(0)) if pinned else []

    # ---- the loop -----------------------------------------------------------------------
    def run(self) -> int:
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        previous = {sig: signal.signal(sig, _noted) for sig in SIGNALS}
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            log.info("supervisor pid %d: starting %d workers", os.getpid(), len(self.slots))
            for slot in self.slots:
                self._fork(slot)
            while self._running():
                self._wait()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._selector.close()
            self._close_helpers()
            self.standby.close()
        log.info("stopped")
        return self.exit_code

    def _running(self) -> bool:
        return not self._stopping or any(slot.pid for slot in self.slots)

    def _wait(self) -> None:
        timeout = self._next_restart()
        for key, _ in self._selector.select(timeout):
            if key.fd == self._wake_r:
                self._signals()
            else:
                self._readiness(key.data)
        self._restart_due()

    def _signals(self) -> None:
        with contextlib.suppress(BlockingIOError):
            for signum in os.read(self._wake_r, 512):
                self._on_signal(signum)

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            self._reap()
        elif signum in (signal.SIGTERM, signal.SIGINT):
            self.stop()
        elif signum == signal.SIGHUP:
            self._reload()
        elif signum == signal.SIGUSR1:
            logtargets.reopen()
            self._signal_workers(signal.SIGUSR1)
        elif signum == signal.SIGUSR2:  # a worker made work due (flush, release): all look
            self._signal_workers(signal.SIGUSR2)

    # ---- workers ------------------------------------------------------------------------
    def _fork(self, slot: Slot) -> None:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            code: int = ExitCode.SOFTWARE
            try:
                os.close(read_end)
                code = self._work(slot, write_end)
            except BaseException:
                log.exception("worker %d failed", slot.index)
            finally:
                logging.shutdown()
                os._exit(code)
        os.close(write_end)
        slot.pid, slot.started, slot.ready, slot.ready_fd = pid, time.monotonic(), False, read_end
        slot.restart_at = None
        self._selector.register(read_end, selectors.EVENT_READ, slot)
        log.info("worker %d started (pid %d)", slot.index, pid)

    def _pin(self, slot: Slot) -> None:
        """In the child, before it starts a thread: keep the worker on one CPU, the Nth of
        the supervisor's (round robin). Its event loop and its queue writer's threads then
        hand work to each other on that CPU instead of waking an idle one, which costs a
        VM far more; the shared listening sockets still give each new connection to
        whichever worker is free to take it."""
        cpus = self._cpus
        if len(cpus) < 2:
            return
        cpu = cpus[slot.index % len(cpus)]
        try:
            process.keep_to_cpu(cpu)  # the programs it starts keep every CPU
        except OSError as exc:  # the CPU went offline, or a cgroup took it away
            log.warning("worker %d: cannot keep to CPU %d: %s", slot.index, cpu, exc)

    def _work(self, slot: Slot, ready_fd: int) -> int:
        """In the child: forget the supervisor's part and run the daemon."""
        signal.set_wakeup_fd(-1)
        for sig in SIGNALS:
            # until the daemon's loop handles them: a reload, a log reopen or a wake-up
            # sent while this worker starts must not kill it
            quiet = sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
            signal.signal(sig, signal.SIG_IGN if quiet else signal.SIG_DFL)
        os.close(self._wake_r)
        os.close(self._wake_w)
        for other in self.slots:
            if other.ready_fd is not None and other is not slot:
                os.close(other.ready_fd)
            if other.helper is not None and other is not slot:
                other.helper.sock.close()
        process.die_with_parent(self.pid)  # no worker outlives the supervisor
        process.name(f"mailwright-w{slot.index}".encode())
        self._pin(slot)
        RECENT.share(self.recent, slot.index)
        if slot.index:  # worker 0's monitor keeps its warnings (daemon.monitor)
            logging.getLogger("mailwright").addHandler(ErrorLog())
        runtime = replace(
            self.runtime,
            helper=slot.helper,
            notifier=Notifier(parent_fd=ready_fd),
            worker=WorkerRole(slot.index, len(self.slots)),
            share=self.share.worker(slot.index),
            standby=self.standby.worker(slot.index),
            delivery_slots=self.deliveries.worker(slot.index),
        )
        try:
            return run_daemon(self.settings, runtime)
        except ConfigError as exc:
            log.error("worker %d: %s", slot.index, exc)
            return ExitCode.CONFIG
        except OSError as exc:
            log.error("worker %d cannot start: %s", slot.index, exc)
            return ExitCode.OSERR

    def _readiness(self, slot: Slot) -> None:
        fd = slot.ready_fd
        assert fd is not None
        try:
            data = os.read(fd, 64)
        except OSError:
            data = b""
        if data.startswith(b"ready"):
            slot.ready = True
        self._forget_pipe(slot)
        if slot.ready and not self._started and all(s.ready for s in self.slots):
            self._started = True
            log.info("mailwright ready: %d workers", len(self.slots))
            self.runtime.notifier.ready(f"accepting mail with {len(self.slots)} workers")

    def _forget_pipe(self, slot: Slot) -> None:
        if slot.ready_fd is not None:
            self._selector.unregister(slot.ready_fd)
            os.close(slot.ready_fd)
            slot.ready_fd = None

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is not None:
                self._worker_exited(slot, os.waitstatus_to_exitcode(status))
            elif any(s.helper is not None and s.helper.pid == pid for s in self.slots):
                log.error("privileged helper pid %d exited (status %d)", pid, status)

    def _worker_exited(self, slot: Slot, code: int) -> None:
        pid, slot.pid = slot.pid, 0
        self._forget_pipe(slot)
        self.share.reset_worker(slot.index)  # its connections died with it
        self.deliveries.reset_worker(slot.index)  # and its deliveries
        if not self._stopping:  # the others listen until worker 0 is back and sees no one
            self.standby.set(True)
        metrics.worker_exited(pid)  # its sessions too; its counts stay in the sums
        how = f"signal {-code}" if code < 0 else f"status {code}"
        if self._stopping:
            log.info("worker %d (pid %d) stopped (%s)", slot.index, pid, how)
            if code > 0 and self.exit_code == ExitCode.OK:
                self.exit_code = code
            return
        if not self._started or code in (ExitCode.CONFIG, ExitCode.TEMPFAIL):
            log.error("worker %d (pid %d) exited (%s): stopping the daemon", slot.index, pid, how)
            self.exit_code = code if code > 0 else ExitCode.SOFTWARE
            self.stop()
            return
        ran = time.monotonic() - slot.started
        slot.quick_deaths = slot.quick_deaths + 1 if ran < STEADY else 0
        delay = min(MAX_BACKOFF, 2.0 ** (slot.quick_deaths - 1)) if slot.quick_deaths else 0.0
        log.warning(
            "worker %d (pid %d) exited (%s) after %.1f s: restarting%s",
            slot.index,
            pid,
            how,
            ran,
            f" in {delay:.0f} s" if delay else "",
        )
        slot.restart_at = time.monotonic() + delay

    def _next_restart(self) -> float | None:
        due = [s.restart_at for s in self.slots if s.restart_at is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and slot.restart_at <= now and not self._stopping:
                self._fork(slot)

    def _signal_workers(self, signum: int) -> None:
        for slot in self.slots:
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signum)

    # ---- stop and reload ----------------------------------------------------------------
    def stop(self) -> None:
        """Drain every worker (a second call: they exit at once)."""
        self._stopping += 1
        for slot in self.slots:
            slot.restart_at = None
        if self._stopping == 1:
            log.info("shutting down: stopping %d workers", sum(1 for s in self.slots if s.pid))
            self.runtime.notifier.stopping("stopping: finishing sessions and deliveries")
        self._signal_workers(signal.SIGTERM)

    def _reload(self) -> None:
        """Check the configuration here, then let every worker take it."""
        logtargets.reopen()
        path = self.runtime.config_path
        log.info("SIGHUP: checking the configuration from %s", path or "built-in defaults")
        notifier = self.runtime.notifier
        notifier.reloading()
        try:
            settings, kept = reload.load(path, self.settings)
            check_generation(settings)
        except (ConfigError, OSError) as exc:
            log.error("SIGHUP: configuration refused, the previous one stays in use: %s", exc)
            notifier.ready(f"configuration refused: {str(exc).splitlines()[0]}")
            return
        self.settings = settings  # for workers started from now on
        for name in kept:
            log.warning("SIGHUP: %s changed: takes effect at the next restart", name)
        self._signal_workers(signal.SIGHUP)
        notifier.ready(f"accepting mail with {len(self.slots)} workers")

    def _close_helpers(self) -> None:
        """The helpers exit when their channel closes (every worker has gone)."""
        for slot in self.slots:
            if slot.helper is not None:
                slot.helper.sock.close()
        for slot in self.slots:
            if slot.helper is not None:
                reap(slot.helper.pid, 10)


def _noted(signum: int, frame: FrameType | None) -> None:
    """The wakeup fd carries the signal to the loop; nothing to do here."""


def supervise(settings: Settings, runtime: Runtime, helpers: list[HelperClient | None]) -> int:
    """Run ``len(helpers)`` workers until stopped; the daemon's exit code.

    Before any worker starts, holding the queue lock, the queue is recovered once as the
    only process does (every lease left in it is from a crash; the spool's leftovers go):
    a worker started later clears only the leases of workers that died."""
    queue = settings.queue
    for path in (queue.directory, queue.spool_dir):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    Daemon.clean_spool(queue.spool_dir)
    store = queue_store(queue)
    try:  # a shared database: only this host's dead owners' leases (the others expire)
        store.open(exclusive=clears_all_leases(queue))
    except StoreError as exc:
        log.error("%s", exc)
        return ExitCode.TEMPFAIL
    finally:
        store.close()  # no connection may cross the fork
    metrics.use_multiprocess(queue.directory / "metrics", len(helpers))
    return Supervisor(settings, runtime, helpers).run()
