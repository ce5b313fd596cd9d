"""A Mailwright daemon that also delivers, for end-to-end tests of local delivery.

``mailwright serve`` does not run the queue manager yet (the wiring,
``mailwright.daemon.delivery.build_scheduler``, is being written). Until it does,
this runner starts the daemon's parts itself (queue, writer, listeners) plus a
``Scheduler`` built the way the wiring is meant to build it: router, SMTP and LMTP
agents, the local agents (``delivery.local.local_agents``) and the alias
``Expander``, one ``AddressResolver`` shared with the RCPT-time check. When
``mailwright.daemon.delivery`` exists, its ``build_scheduler`` is used instead.

    python -m tests.support.mailhost --config FILE

Logs like ``mailwright serve --log-level DEBUG`` (``mailwright ready`` when it
accepts) and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import signal
import sys

from mailwright.config.loader import load_settings
from mailwright.config.schema import Settings
from mailwright.daemon.app import Daemon, build_pipeline
from mailwright.delivery.lmtp import LmtpAgent
from mailwright.delivery.local import local_agents
from mailwright.delivery.smtp import SmtpAgent
from mailwright.edge.context import EdgeContext
from mailwright.edge.listener import Edge
from mailwright.queue.backoff import RetryPolicy
from mailwright.queue.expansion import Expander
from mailwright.queue.scheduler import Scheduler, SchedulerSettings, domain_of
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import NewMessage
from mailwright.queue.writer import QueueWriter
from mailwright.routing.mx import resolver_from_settings
from mailwright.routing.nexthop import Transport
from mailwright.routing.resolution import AddressResolver
from mailwright.routing.router import Router

log = logging.getLogger("mailwright.daemon")


def build_scheduler(
    settings: Settings,
    store: SqliteQueueStore,
    writer: QueueWriter,
    resolver: AddressResolver,
) -> Scheduler:
    """What ``daemon.delivery.build_scheduler`` should do, local delivery included."""
    router, problems = Router.from_settings(settings)
    for problem in problems:
        log.error("%s", problem)
    dns, _ = resolver_from_settings(settings)
    agents = {
        Transport.SMTP: SmtpAgent(settings.hostname, dns),
        Transport.LMTP: LmtpAgent(settings.hostname, dns),
        **local_agents(settings, resolver.users),  # LOCAL, PIPE, FILE
    }
    q = settings.queue
    return Scheduler(
        store,
        writer,
        lambda address: router.route(domain_of(address)),
        agents,
        SchedulerSettings(
            max_concurrency=settings.delivery.max_concurrency,
            max_per_destination=settings.delivery.max_per_destination,
            lease_seconds=settings.delivery.lease,
            host_status_timeout=q.host_status_timeout,
            reporting_mta=settings.hostname,
            double_bounce_recipient=q.double_bounce_recipient,
            retry=RetryPolicy(q.first_retry, q.max_retry_interval, q.max_lifetime, q.delay_warning),
        ),
        expander=Expander.from_settings(settings, store, writer, resolver=resolver),
    )


async def serve(settings: Settings) -> None:
    daemon = Daemon(settings)
    daemon.prepare_directories()
    daemon.store.open()
    daemon.writer.start()
    resolver = AddressResolver.from_settings(settings)
    if importlib.util.find_spec("mailwright.daemon.delivery") is not None:
        from mailwright.daemon import delivery  # the real wiring, once it exists

        scheduler = delivery.build_scheduler(settings, daemon.store, daemon.writer)
    else:
        scheduler = build_scheduler(settings, daemon.store, daemon.writer, resolver)

    async def enqueue(message: NewMessage) -> None:
        await daemon.enqueue(message)
        scheduler.wake()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    edge = Edge(
        EdgeContext(
            settings=settings,
            pipeline=build_pipeline(settings, resolver),
            enqueue=enqueue,
            spool_dir=settings.queue.spool_dir,
        )
    )
    try:
        await edge.start()
        runner = asyncio.create_task(scheduler.run())
        log.info("mailwright ready (delivering), queue %s", settings.queue.directory)
        await stop.wait()
        await edge.stop()
        await scheduler.stop(grace=5)
        runner.cancel()
    finally:
        daemon.writer.stop()
        daemon.store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG,
        stream=sys.stderr,
        format="%(asctime)s mailwright[%(process)d]: %(message)s",
    )
    asyncio.run(serve(load_settings(args.config)))


if __name__ == "__main__":
    main()
