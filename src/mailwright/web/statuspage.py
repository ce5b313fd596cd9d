"""The HTML of the status page: the overview, one message's details, the login form.

Pure functions from data to markup: no I/O, no script, no external asset (the
plots are inline SVG from ``web.plot``; the style sheet is inline).
Everything that comes from mail or peers (headers, addresses, replies, error
texts) and everything else interpolated goes through ``esc``, so a hostile
Subject or sender shows as text. Forms that change the queue post to
``/action`` with the session's CSRF token. Reads no settings.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from html import escape

from mailwright.core.durations import short as short_duration
from mailwright.core.headers import HeaderList
from mailwright.queue.admin import status_text
from mailwright.queue.store import MessageState, RecipientState, StoredMessage
from mailwright.web.history import Sample
from mailwright.web.plot import Series, Style, chart
from mailwright.web.status import Status

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#f4f5f7}
header{background:#263238;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:center}
header h1{font-size:18px;margin:0}header .meta{flex:1;opacity:.85}
header form{margin:0}main{padding:10px 20px;max-width:1200px}
section{background:#fff;border:1px solid #dde;border-radius:6px;padding:10px 14px;margin:12px 0}
h2{font-size:15px;margin:2px 0 8px}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eee;vertical-align:top}
th{font-weight:600;background:#fafafa}td.n{text-align:right}
.plots{display:flex;flex-wrap:wrap;gap:12px}.muted{color:#777}
.notice{background:#e8f5e9;border-color:#a5d6a7}.error{background:#ffebee;border-color:#ef9a9a}
pre{white-space:pre-wrap;word-break:break-all;background:#fafafa;padding:8px;margin:0}
button{padding:4px 10px;margin-right:6px}code{font-size:13px}
.actions{margin-top:8px;display:flex;gap:8px;align-items:center;flex-wrap:wrap}
"""

QUEUE_COLOUR, DEFERRED_COLOUR = "#1f77b4", "#ff7f0e"
RECEIVED_COLOUR, DELIVERED_COLOUR, BOUNCED_COLOUR = "#2ca02c", "#1f77b4", "#d62728"


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def layout(title: str, body: str, *, csrf: str = "", hostname: str = "", meta: str = "") -> str:
    logout = (
        f'<form method="post" action="/logout"><input type="hidden" name="csrf"'
        f' value="{esc(csrf)}"><button type="submit">Log out</button></form>'
        if csrf
        else ""
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f'<header><h1>{esc(title)}</h1><div class="meta">{meta}</div>{logout}</header>'
        f"<main>{body}</main></body></html>\n"
    )


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="muted">{esc(empty)}</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _message_link(queue_id: str) -> str:
    return f'<a href="/message/{esc(queue_id)}"><code>{esc(queue_id)}</code></a>'


def login_page(problem: str = "") -> str:
    error = f'<section class="error">{esc(problem)}</section>' if problem else ""
    form = (
        '<section><h2>Log in</h2><form method="post" action="/login">'
        '<label>Token <input type="password" name="token" autocomplete="current-password"'
        ' autofocus required></label> <button type="submit">Log in</button></form>'
        '<p class="muted">The token is <code>http.token</code> in the configuration.'
        " Scripts may send it as <code>Authorization: Bearer TOKEN</code>.</p></section>"
    )
    return layout("Mailwright status", error + form)


def simple_page(title: str, text: str, csrf: str = "") -> str:
    body = f'<section><p>{esc(text)}</p><p><a href="/status">Back to the status page</a></p>'
    return layout(title, body + "</section>", csrf=csrf)


# ---- the overview -------------------------------------------------------------------------


def _x_labels(slots: int) -> list[tuple[int, str]]:
    return [
        (0, f"-{slots} min"),
        (slots // 4, "-45"),
        (slots // 2, "-30"),
        (3 * slots // 4, "-15"),
        (slots - 1, "now"),
    ]


def plots(history: Sequence[Sample | None]) -> str:
    """The queue size and the throughput of the last hour, minute by minute."""

    def values(get: str) -> list[float | None]:
        out: list[float | None] = []
        for sample in history:
            if sample is None:
                out.append(None)
            elif get in ("messages", "deferred"):
                out.append(float(getattr(sample, get)))
            else:
                out.append(float(getattr(sample.flow, get)))
        return out

    labels = _x_labels(len(history))
    queue = chart(
        "Queue size",
        [
            Series("messages", QUEUE_COLOUR, values("messages")),
            Series("deferred recipients", DEFERRED_COLOUR, values("deferred")),
        ],
        Style.STEPS,
        labels,
        element_id="plot-queue",
    )
    flow = chart(
        "Throughput per minute",
        [
            Series("received", RECEIVED_COLOUR, values("received")),
            Series("delivered", DELIVERED_COLOUR, values("delivered")),
            Series("deferred", DEFERRED_COLOUR, values("deferred")),
            Series("bounced", BOUNCED_COLOUR, values("bounced")),
        ],
        Style.BARS,
        labels,
        element_id="plot-throughput",
    )
    plots = f'<div class="plots">{queue}{flow}</div>'
    return f'<section id="plots"><h2>The last hour</h2>{plots}</section>'


def _summary(status: Status) -> str:
    q, t = status.queue, status.totals
    counts = _table(
        [
            "Messages",
            "active",
            "on hold",
            "Recipients",
            "due",
            "deferred",
            "delivering",
            "held",
            "Oldest",
        ],
        [
            [
                str(q.messages),
                str(q.active_messages),
                str(q.held_messages),
                str(q.due + q.deferred + q.delivering + q.held),
                str(q.due),
                str(q.deferred),
                str(q.delivering),
                str(q.held),
                esc(short_duration(status.now - q.oldest)) if q.oldest else "-",
            ]
        ],
        "",
    )
    totals = _table(
        ["Since start", "received", "rejected", "delivered", "deferred", "bounced"],
        [
            [
                esc(short_duration(status.uptime)),
                str(t.received),
                str(t.rejected),
                str(t.delivered),
                str(t.deferred),
                str(t.bounced),
            ]
        ],
        "",
    )
    listeners = _table(
        ["Listener", "kind", "address", "sessions"],
        (
            [esc(li.name), esc(li.kind), esc(li.address), str(li.sessions)]
            for li in status.listeners
        ),
        "No listeners.",
    )
    refusing = q.refusing_text()
    if refusing:  # the first thing an operator should see: no mail gets in
        counts = f'<p class="error" id="refusing">{esc(refusing)}</p>{counts}'
    return (
        f'<section id="summary"><h2>Queue</h2>{counts}<h2 style="margin-top:10px">Traffic</h2>'
        f'{totals}<h2 style="margin-top:10px">Listeners</h2>{listeners}</section>'
    )


def _messages(messages: Sequence[StoredMessage], total: int, csrf: str) -> str:
    rows = []
    for m in messages:
        waiting = [r.address for r in m.recipients if r.state is RecipientState.QUEUED]
        state = "on hold" if m.state is MessageState.HOLD else "active"
        rows.append(
            [
                f'<input type="checkbox" name="id" value="{esc(m.queue_id)}"'
                f' aria-label="select {esc(m.queue_id)}">',
                _message_link(m.queue_id),
                esc(when(m.received_at)),
                esc(f"<{m.envelope.sender_text}>"),
                esc(
                    ", ".join(f"<{a}>" for a in waiting[:3]) + (" ..." if len(waiting) > 3 else "")
                ),
                esc(state),
                esc(status_text(m) or ""),
            ]
        )
    shown = f"the oldest {len(messages)} of {total}" if total > len(messages) else str(total)
    table = _table(
        ["", "Queue ID", "Arrived", "Sender", "Waiting for", "State", "Status"],
        rows,
        "The queue is empty.",
    )
    return (
        f'<section id="messages"><h2>Messages ({esc(shown)})</h2>'
        f'<form method="post" action="/action">{_csrf(csrf)}'
        f'<input type="hidden" name="back" value="status">{table}'
        f"{_action_buttons(flush_all=True)}</form>{_lookup()}</section>"
    )


def _csrf(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(csrf)}">'


def _action_buttons(flush_all: bool = False) -> str:
    everything = (
        '<button type="submit" name="action" value="flush-all">Flush the whole queue</button>'
        if flush_all
        else ""
    )
    return (
        '<div class="actions">'
        '<button type="submit" name="action" value="flush">Flush</button>'
        '<button type="submit" name="action" value="hold">Hold</button>'
        '<label>reason <input type="text" name="reason" size="24"'
        ' placeholder="held by administrator"></label>'
        '<button type="submit" name="action" value="release">Release</button>'
        '<button type="submit" name="action" value="delete">Delete</button>'
        '<label><input type="checkbox" name="confirm" value="yes"> yes, delete</label>'
        f"{everything}</div>"
    )


def _lookup() -> str:
    return (
        '<form method="get" action="/message" class="actions">'
        '<label>Queue ID <input type="text" name="id" size="20" required></label>'
        '<button type="submit">Show</button></form>'
    )


def _deferred(status: Status) -> str:
    rows = (
        [
            esc(g.domain or "(local)"),
            esc(" ".join(x for x in (g.status, g.reply) if x) or "-"),
            str(g.count),
            esc(when(g.last_attempt)),
            " ".join(_message_link(q) for q in g.queue_ids),
        ]
        for g in status.deferred
    )
    table = _table(
        ["Destination", "Reason", "Recipients", "Last attempt", "Messages"],
        rows,
        "Nothing is deferred.",
    )
    return f'<section id="deferred"><h2>Deferred, by reason and destination</h2>{table}</section>'


def _bounces(status: Status) -> str:
    rows = (
        [
            esc(when(b.at)),
            _message_link(b.queue_id),
            esc(f"<{b.sender}>"),
            esc(f"<{b.recipient}>"),
            esc(b.reply),  # as the server's reply reads: 550 5.1.1 text
            esc(b.remote_mta or "-"),
        ]
        for b in status.bounces
    )
    table = _table(
        ["Time", "Queue ID", "Sender", "Recipient", "Reply", "Remote"],
        rows,
        "No bounces since the daemon started.",
    )
    return f'<section id="bounces"><h2>Recent bounces</h2>{table}</section>'


def _milters(status: Status) -> str:
    rows = (
        [
            esc(m.name),
            str(m.calls),
            str(m.failures),
            esc(f"{m.last_error} (at {m.last_error_stage})" if m.last_error else "-"),
            esc(when(m.last_error_at)),
        ]
        for m in status.milters
    )
    table = _table(
        ["Filter", "Calls", "Failures", "Last error", "When"], rows, "No milters configured."
    )
    return f'<section id="milters"><h2>Milter health</h2>{table}</section>'


def _auth(status: Status) -> str:
    """Each check's results since start: a row per check, its setting, counts per result."""
    rows = (
        [
            esc(a.title),
            "on" if a.enabled else "off",
            esc(" · ".join(f"{result} {n}" for result, n in a.results.items()) or "-"),
            str(sum(a.results.values())),
        ]
        for a in status.auth
    )
    table = _table(["Check", "Setting", "Results", "Total"], rows, "No checks in this build.")
    return f'<section id="auth"><h2>Authentication since start</h2>{table}</section>'


def _nodes(status: Status) -> str:
    """The nodes of a shared queue (PostgreSQL); nothing for a queue of one host."""
    if not status.nodes:
        return ""
    rows = (
        [
            esc(n.node),
            esc(n.state),
            esc(f"{short_duration(n.age)} ago"),
            esc(n.host),
            str(n.pid),
            str(n.workers),
            str(n.delivering),
            esc(n.listeners or "-"),
            esc(n.version),
        ]
        for n in status.nodes
    )
    columns = ["Node", "State", "Heartbeat", "Host", "Pid", "Workers", "Delivering"]
    table = _table([*columns, "Listeners", "Version"], rows, "")
    return f'<section id="nodes"><h2>Nodes</h2>{table}</section>'


def _errors(status: Status) -> str:
    rows = ([esc(when(e.at)), esc(e.level), esc(e.message)] for e in status.errors[:20])
    table = _table(["Time", "Level", "Message"], rows, "No warnings or errors logged.")
    return f'<section id="errors"><h2>Recent warnings and errors</h2>{table}</section>'


def _notice(notice: str) -> str:
    return f'<section class="notice" id="notice">{esc(notice)}</section>' if notice else ""


def meta_line(status: Status) -> str:
    workers = f"{status.workers_line} · " if status.workers > 1 else ""
    return esc(
        f"{status.hostname} · up {short_duration(status.uptime)} · pid {status.pid} · "
        f"{workers}version {status.version} · delivery {status.delivery_mode} · "
        f"{when(status.now)}"
    )


def status_page(
    status: Status,
    history: Sequence[Sample | None],
    messages: Sequence[StoredMessage],
    csrf: str,
    notice: str = "",
) -> str:
    body = "".join(
        [
            _notice(notice),
            plots(history),
            _summary(status),
            _nodes(status),
            _messages(messages, status.queue.messages, csrf),
            _deferred(status),
            _bounces(status),
            _milters(status),
            _auth(status),
            _errors(status),
        ]
    )
    return layout("Mailwright status", body, csrf=csrf, meta=meta_line(status))


# ---- one message --------------------------------------------------------------------------


def message_page(message: StoredMessage, headers: HeaderList, csrf: str, notice: str = "") -> str:
    env, origin = message.envelope, message.origin
    params = env.params
    state = message.state.value + (f" ({message.hold_reason})" if message.hold_reason else "")
    fields = [
        ("Queue ID", message.queue_id),
        ("State", state),
        ("Arrived", when(message.received_at)),
        ("Size", f"{message.size} octets"),
        ("Sender", f"<{env.sender_text}>"),
        ("Subject", message.subject or ""),
        ("Message-ID", message.message_id_header or ""),
        (
            "Origin",
            f"{origin.protocol} from {origin.client_name or ''} "
            f"[{origin.client_address or 'local'}] helo={origin.helo or '-'}",
        ),
        ("Authenticated", origin.auth_user or origin.local_user or "-"),
        (
            "DSN",
            f"RET={params.ret.value if params.ret else '-'} ENVID={params.envid or '-'}"
            f" BODY={params.body.value}",
        ),
    ]
    envelope = (
        "<table>"
        + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in fields)
        + "</table>"
    )
    recipients = _table(
        ["#", "Recipient", "State", "Attempts", "Next attempt", "Last reply", "Remote", "Target"],
        (
            [
                str(r.index),
                esc(f"<{r.address}>"),
                esc(r.state.value),
                str(r.attempts),
                esc(when(r.next_attempt) if r.state is RecipientState.QUEUED else "-"),
                esc(" ".join(x for x in (r.last_status, r.last_reply) if x) or "-"),
                esc(r.remote_mta or "-"),
                esc(str(r.target) if r.target is not None else "-"),
            ]
            for r in message.recipients
        ),
        "No recipients.",
    )
    header_text = "".join(
        h.encode().decode("utf-8", "replace").replace("\r\n", "\n") for h in headers
    )
    actions = (
        f'<form method="post" action="/action">{_csrf(csrf)}'
        f'<input type="hidden" name="id" value="{esc(message.queue_id)}">'
        f'<input type="hidden" name="back" value="message">{_action_buttons()}</form>'
    )
    body = (
        f'{_notice(notice)}<section id="envelope"><h2>Envelope</h2>{envelope}{actions}</section>'
        f'<section id="recipients"><h2>Recipients</h2>{recipients}</section>'
        f'<section id="headers"><h2>Headers</h2><pre>{esc(header_text)}</pre></section>'
        '<p><a href="/status">Back to the status page</a></p>'
    )
    return layout(f"Message {message.queue_id}", body, csrf=csrf)
