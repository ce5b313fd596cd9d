"""What every session of the daemon shares: settings, the policy pipeline, the way into the queue.

The daemon builds one for each generation of its parts (at start-up, then on every
reload); a session takes the one current at its connect and keeps it to its end, so a
reload never changes the policy of a session in progress. Sessions only read it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from mailwright.config.schema import Listener, ListenerKind, Settings
from mailwright.edge.security import EdgeSecurity
from mailwright.manager.scheduler import Scheduler
from mailwright.policy.hooks import Pipeline
from mailwright.queue.store import NewMessage
from mailwright.routing.clientname import ClientNames
from mailwright.smtp.data import BareLinePolicy, DataLimits
from mailwright.smtp.server import ServerSettings

Enqueue = Callable[[NewMessage], Awaitable[None]]


@dataclass(slots=True)
class EdgeContext:
    settings: Settings
    pipeline: Pipeline
    enqueue: Enqueue  # commits durably (fsync) before returning
    spool_dir: Path
    security: EdgeSecurity | None = None  # STARTTLS, AUTH; None: neither is offered
    client_names: ClientNames | None = None  # reverse DNS of clients; None: no names
    # delivering now (background mode): LMTP answers local recipients once delivered
    deliveries: Scheduler | None = None

    # made once per listener: every session of a listener in this generation has the same
    _server_settings: dict[int, tuple[Listener, ServerSettings]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def server_settings(self, listener: Listener) -> ServerSettings:
        known = self._server_settings.get(id(listener))
        if known is None or known[0] is not listener:
            known = self._server_settings[id(listener)] = (listener, self._settings_for(listener))
        return known[1]

    def _settings_for(self, listener: Listener) -> ServerSettings:
        s = self.settings.server
        return ServerSettings(
            hostname=self.settings.hostname,
            lmtp=listener.kind is ListenerKind.LMTP,
            data_limits=DataLimits(
                max_size=s.max_message_size,
                max_line=s.max_line_length,
                bare_lines=BareLinePolicy(s.bare_line_endings.value),
            ),
            max_recipients=s.max_recipients,
            max_command_line=s.max_command_line,
            max_bad_commands=s.max_bad_commands,
            max_junk_commands=s.max_junk_commands,
            vrfy=s.vrfy,
            requiretls=s.requiretls,
            strict_envelopes=s.strict_rfc821_envelopes,
            decide_unknown=True,  # the pipeline (a milter) may answer unknown commands
        )
