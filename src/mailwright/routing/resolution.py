"""Local address resolution: aliases, ``.forward``, the virtual user table, local users.

``AddressResolver.resolve(address)`` follows one recipient of a local (or virtual)
domain to its final destinations, the way Sendmail does at delivery time:

1. the virtual user table (``routing.virtual``): a rewrite, or an ``error:`` reply;
2. aliases (``user+detail`` falls back to ``user``; ``postmaster`` always exists,
   by default as an alias of ``root``);
3. the user's ``.forward`` (``routing.forward``);
4. the user's mailbox (``routing.localusers``), else ``550 5.1.1 User unknown``.

Every item is followed recursively, at most ``routing.max_alias_recursion`` levels
deep (deeper: ``554 5.4.6 aliasing/forwarding loop broken``). Each final
destination is kept once (later duplicates are dropped, as are destinations in
``exclude``: the message's other recipients). A name that refers back to one of
its own ancestors (``a: a, b``, or ``alice`` in alice's ``.forward``) is the real
user's mailbox; if there is no such user it is a loop (554 5.4.6). An alias
``NAME`` with an alias ``owner-NAME`` is a mailing list: its members form a group
whose envelope sender becomes the owner (the owner alias's single address if it
has exactly one, else ``owner-NAME@domain``), so errors reach the owner (RFC 5321
3.9.2); plain aliases keep the sender.

The result (``Resolution``) lists the destinations as ``Leaf`` objects: an address
to route (a remote one) or a ``core.target.Target`` (mailbox, program, file, or an
error to bounce). Programs and files are controlled by the owner of the file they
came from; the target names the user they run as (``localusers.run_as``): that owner,
but the default user for root (unless ``service.root_programs``) and unknown owners.

Also ``verify_lines`` (``sendmail -bv``, ``mailwright address test``) and the
RCPT-time ``check``. Trusts the tables it was given. Settings: ``hostname``,
``routing.*``, ``local_delivery.*`` (through ``from_settings``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mailwright.core.address import Address, AddressError, parse_mailbox
from mailwright.core.domains import DomainSet
from mailwright.core.reply import Reply
from mailwright.core.target import Mailer, Target
from mailwright.routing.aliases import AliasTable, prepare_aliases
from mailwright.routing.forward import ItemFile, ItemFileError, read_forward, read_include
from mailwright.routing.items import Item, ItemKind
from mailwright.routing.localusers import (
    LocalUser,
    LocalUsers,
    account_name,
    local_users,
    run_as,
)
from mailwright.routing.virtual import VirtualTable, split_detail

if TYPE_CHECKING:
    from mailwright.config.schema import Settings

log = logging.getLogger("mailwright.routing")

ForwardReader = Callable[[list[str], LocalUser, str], ItemFile | None]

Key = tuple[str, str]
POSTMASTER_DEFAULT = (Item(ItemKind.ADDRESS, "root"),)


def error_target(reply: Reply) -> Target:
    """A target that refuses with ``reply`` (queued like any recipient, then bounced)."""
    return Target(
        Mailer.ERROR, f"{reply.code} {reply.status or ''} {reply.text}".replace("  ", " ")
    )


def target_reply(target: Target) -> Reply:
    """The reply an ERROR target stands for."""
    code_text, _, rest = target.value.partition(" ")
    status, _, text = rest.partition(" ")
    code = int(code_text) if code_text.isdigit() else 550
    if not (status[:1].isdigit() and status.count(".") == 2):
        status, text = f"{str(code)[0]}.0.0", rest
    return Reply.of(code, status, text or "Delivery refused")


def user_unknown(address: Address) -> Reply:
    return Reply.of(550, "5.1.1", f"<{address}>... User unknown")


@dataclass(frozen=True, slots=True)
class Leaf:
    """One final destination: an address to route (``target`` None) or a local target."""

    address: Address  # reported as Final-Recipient, written as Delivered-To
    target: Target | None = None

    @property
    def error(self) -> Reply | None:
        if self.target is not None and self.target.mailer is Mailer.ERROR:
            return target_reply(self.target)
        return None


@dataclass(slots=True)
class Group:
    """Destinations that share an envelope sender: the original one, or a list owner's."""

    owner: Address | None = None  # None: keep the message's sender
    list_name: str = ""
    leaves: list[Leaf] = field(default_factory=list)


@dataclass(slots=True)
class Resolution:
    address: Address
    groups: list[Group]  # groups[0] keeps the sender; lists follow
    trace: list[tuple[int, str]] = field(default_factory=list)  # (depth, text), for people
    temporary: Reply | None = None  # a lookup failed for now: try again later
    seen: set[Key] = field(default_factory=set)

    @property
    def leaves(self) -> list[Leaf]:
        return [leaf for group in self.groups for leaf in group.leaves]

    @property
    def lists(self) -> list[Group]:
        return [g for g in self.groups if g.owner is not None]

    def itself(self) -> Leaf | None:
        """The single destination when the address is simply delivered (no expansion)."""
        leaves = self.leaves
        if len(leaves) == 1 and not self.lists:
            leaf = leaves[0]
            mailbox = leaf.target is not None and leaf.target.mailer is Mailer.LOCAL
            if mailbox and leaf.address == self.address:
                return leaf
        return None

    def lines(self) -> list[str]:
        return ["  " * depth + text for depth, text in self.trace]


@dataclass(frozen=True, slots=True)
class _Ctl:
    """Who controls the items being read: their programs and files run as ``user``."""

    user: str = ""  # "" = the default user
    reader_uid: int | None = None  # :include: files must be readable by this user
    unsafe: str = ""  # programs and files refused, and why


@dataclass(slots=True)
class _Walk:
    resolution: Resolution
    exclude: set[Key]
    describe_remote: Callable[[Address], str] | None

    @property
    def seen(self) -> set[Key]:
        return self.resolution.seen

    def note(self, depth: int, text: str) -> None:
        self.resolution.trace.append((depth, text))


class AddressResolver:
    def __init__(
        self,
        *,
        hostname: str,
        local_domains: Iterable[str],
        users: LocalUsers,
        aliases: AliasTable | None = None,
        virtual: VirtualTable | None = None,
        virtual_domains: Iterable[str] = (),
        forward_path: list[str] | None = None,
        max_depth: int = 10,
        default_user: str = "nobody",
        root_programs: bool = False,
    ) -> None:
        self.hostname = hostname.lower()
        self.local_domains = DomainSet(local_domains)
        self.virtual_domains = DomainSet(virtual_domains)
        self.users = users
        self.aliases = aliases
        self.virtual = virtual
        self.forward_path = forward_path if forward_path is not None else ["$z/.forward"]
        self.max_depth = max_depth
        self.default_user = default_user
        self.root_programs = root_programs
        # how a user's .forward is read: here, or by the privileged helper for a daemon
        # that gave up root (home directories may be closed to it)
        self.read_forward: ForwardReader = read_forward

    @classmethod
    def from_settings(cls, settings: Settings, build_missing: bool = True) -> AddressResolver:
        """The resolver the settings describe. With ``build_missing``, an alias file
        whose table is missing or out of date is compiled now."""
        routing = settings.routing
        if build_missing:
            prepare_aliases(settings)
        aliases = AliasTable(settings.alias_database) if routing.alias_file is not None else None
        virtual = VirtualTable(routing.virtual_user_table) if routing.virtual_user_table else None
        return cls(
            hostname=settings.hostname,
            local_domains=settings.local_domains,
            users=local_users(settings),
            aliases=aliases,
            virtual=virtual,
            virtual_domains=routing.virtual_domains,
            forward_path=routing.forward_path,
            max_depth=routing.max_alias_recursion,
            default_user=settings.local_delivery.default_user,
            root_programs=settings.service.root_programs,
        )

    # ---- which addresses are ours ----------------------------------------------------------

    def is_local_domain(self, domain: str) -> bool:
        return domain == "" or domain.lower() in self.local_domains

    def handles(self, address: str | Address) -> bool:
        """Is this address resolved here (a local or virtual domain)? A bare name (only
        ``postmaster`` is accepted without a domain, RFC 5321 4.5.1) is local."""
        domain = address.domain if isinstance(address, Address) else _domain_of(address)
        return self.is_local_domain(domain) or self._virtual_domain(domain)

    def _virtual_domain(self, domain: str) -> bool:
        domain = domain.lower()
        if domain in self.virtual_domains:
            return True
        return self.virtual is not None and domain in self.virtual.domains

    def key(self, address: str | Address, target: Target | None = None) -> Key:
        """What makes two recipients the same destination (for duplicate removal)."""
        if target is not None:
            return _target_key(target)
        addr = address if isinstance(address, Address) else _recipient(address)
        if addr is not None and self.is_local_domain(addr.domain):
            return ("name", addr.local.lower())
        return ("addr", _norm(addr) if addr is not None else str(address).lower())

    # ---- RCPT time -----------------------------------------------------------------------

    def check(self, address: Address) -> Reply | None:
        """At RCPT: None if the recipient exists (or is not ours), else the refusal."""
        if not self.handles(address):
            return None
        if self.virtual is not None:
            match = self.virtual.lookup(str(address))
            if match is not None:
                return match.error
        if not self.is_local_domain(address.domain):
            return user_unknown(address)
        name = address.local.lower()
        if name == "postmaster":
            return None
        for candidate in _names(name):
            if self.aliases is not None and self.aliases.lookup(candidate) is not None:
                return None
            if self.users.lookup(candidate) is not None:
                return None
        return user_unknown(address)

    # ---- delivery time -------------------------------------------------------------------

    def resolve(
        self,
        address: Address,
        exclude: Iterable[Key] = (),
        describe_remote: Callable[[Address], str] | None = None,
    ) -> Resolution:
        """Every final destination of ``address``; see the module docstring."""
        walk = _Walk(Resolution(address, [Group()]), set(exclude), describe_remote)
        self._address(walk, address, 0, (), walk.resolution.groups[0])
        return walk.resolution

    def _address(
        self, w: _Walk, addr: Address, depth: int, chain: tuple[str, ...], group: Group
    ) -> None:
        if not self.handles(addr):
            self._leaf(w, group, Leaf(addr), ("addr", _norm(addr)), depth)
            return
        if depth > self.max_depth:
            self._loop(w, group, addr, depth, f"({depth} aliases deep; {self.max_depth} max)")
            return
        if self.virtual is not None:
            match = self.virtual.lookup(str(addr))
            if match is not None:
                self._virtual(w, addr, match.key, match.target, match.error, depth, chain, group)
                return
        if not self.is_local_domain(addr.domain):
            self._error(w, group, addr, user_unknown(addr), depth)
            return
        self._name(w, addr, depth, chain, group)

    def _virtual(
        self,
        w: _Walk,
        addr: Address,
        key: str,
        target: str,
        error: Reply | None,
        depth: int,
        chain: tuple[str, ...],
        group: Group,
    ) -> None:
        if error is not None:
            w.note(depth, f"{addr}: virtual user table {key}: error")
            self._error(w, group, addr, error, depth)
            return
        marker = f"<{_norm(addr)}>"  # virtual addresses join the chain of ancestors
        if marker in chain:
            self._loop(w, group, addr, depth, "")
            return
        seen_key = ("addr", _norm(addr))
        if seen_key in w.seen and depth:
            w.note(depth, f"{addr}: duplicate, already a recipient")
            return
        w.seen.add(seen_key)
        w.note(depth, f"{addr}: virtual user table {key} -> {target}")
        rewritten = _parse(target) if "@" in target else Address(target, self.hostname)
        if rewritten is None:
            self._error(w, group, addr, Reply.of(550, "5.1.3", f"<{target}>... bad address"), depth)
            return
        self._address(w, rewritten, depth + 1, (*chain, marker), group)

    def _name(
        self, w: _Walk, addr: Address, depth: int, chain: tuple[str, ...], group: Group
    ) -> None:
        name = addr.local.lower()
        if name in chain:
            self._self_reference(w, addr, name, depth, group)
            return
        key = ("name", name)
        if depth and (key in w.seen or key in w.exclude):
            w.note(depth, f"{addr}: duplicate, already a recipient")
            return
        w.seen.add(key)
        found = self._alias(name)
        if found is not None:
            alias, items = found
            inner = (*chain, name) if alias == name else (*chain, name, alias)
            self._expand_alias(w, addr, alias, items, depth, inner, group)
            return
        user = self._user(name)
        if user is None:
            self._error(w, group, addr, user_unknown(addr), depth)
            return
        if self._forward(w, addr, user, depth, (*chain, name), group):
            return
        self._mailbox(w, group, addr, user, depth)

    def _alias(self, name: str) -> tuple[str, tuple[Item, ...]] | None:
        for candidate in _names(name):
            items = self.aliases.lookup(candidate) if self.aliases is not None else None
            if items is not None:
                return candidate, items
        if name == "postmaster":
            return name, POSTMASTER_DEFAULT
        return None

    def _user(self, name: str) -> LocalUser | None:
        for candidate in _names(name):
            user = self.users.lookup(candidate)
            if user is not None:
                return user
        return None

    def _expand_alias(
        self,
        w: _Walk,
        addr: Address,
        alias: str,
        items: tuple[Item, ...],
        depth: int,
        chain: tuple[str, ...],
        group: Group,
    ) -> None:
        owner = self._owner(alias, addr.domain or self.hostname)
        if owner is not None and group.list_name != alias:
            group = Group(owner=owner, list_name=alias)
            w.resolution.groups.append(group)
            w.note(depth, f"{addr}: alias {alias}, a list: sender and errors <{owner}>")
        else:
            w.note(depth, f"{addr}: alias {alias}")
        ctl = _Ctl(user=self._alias_file_user())
        for item in items:
            self._item(w, item, addr, depth + 1, chain, group, ctl)

    def _owner(self, alias: str, domain: str) -> Address | None:
        """A list's owner: ``owner-NAME``'s single address, else ``owner-NAME@domain``."""
        if alias.startswith("owner-") or self.aliases is None:
            return None
        name = f"owner-{alias}"
        if self.aliases.lookup(name) is None:
            return None
        fallback = Address(name, domain)
        sub = self.resolve(fallback)
        leaves = [
            leaf for leaf in sub.leaves if leaf.target is None or leaf.target.mailer is Mailer.LOCAL
        ]
        if len(sub.leaves) == 1 and len(leaves) == 1 and not sub.lists:
            return leaves[0].address
        return fallback

    def _alias_file_user(self) -> str:
        uid = self.aliases.source_uid if self.aliases is not None else None
        if uid is not None:
            return account_name(uid)  # root too: run_as decides what root gets
        return ""

    def _forward(
        self,
        w: _Walk,
        addr: Address,
        user: LocalUser,
        depth: int,
        chain: tuple[str, ...],
        group: Group,
    ) -> bool:
        if not self.forward_path:
            return False
        try:
            forward = self.read_forward(self.forward_path, user, self.hostname)
        except ItemFileError as exc:
            w.resolution.temporary = Reply.of(451, "4.3.0", f"Cannot read {exc.path}: {exc.reason}")
            return True
        if forward is None:
            return False
        for problem in forward.problems:
            log.warning("%s", problem)
        if not forward.items:
            return False
        w.note(depth, f"{addr}: forwarded by {forward.path}")
        ctl = _Ctl(user=user.name, reader_uid=user.uid, unsafe=forward.unsafe)
        for item in forward.items:
            self._item(w, item, addr, depth + 1, (*chain, user.name), group, ctl)
        return True

    def _item(
        self,
        w: _Walk,
        item: Item,
        parent: Address,
        depth: int,
        chain: tuple[str, ...],
        group: Group,
        ctl: _Ctl,
    ) -> None:
        if item.kind is ItemKind.ADDRESS:
            addr = self._qualify(item.value, parent)
            if addr is None:
                self._error(
                    w,
                    group,
                    parent,
                    Reply.of(550, "5.1.3", f"<{item.value}>... bad address"),
                    depth,
                )
            else:
                self._address(w, addr, depth, chain, group)
        elif item.kind is ItemKind.USER:
            addr = Address(item.value, self._local_domain_of(parent))
            user = self._user(item.value.lower())
            if user is None:
                self._error(w, group, addr, user_unknown(addr), depth)
            else:
                self._mailbox(w, group, addr, user, depth)
        elif item.kind in (ItemKind.PROG, ItemKind.FILE):
            self._program_or_file(w, item, parent, depth, group, ctl)
        else:
            self._include(w, item, parent, depth, chain, group, ctl)

    def _program_or_file(
        self, w: _Walk, item: Item, parent: Address, depth: int, group: Group, ctl: _Ctl
    ) -> None:
        kind = "programs" if item.kind is ItemKind.PROG else "files"
        if ctl.unsafe:
            reply = Reply.of(
                550, "5.7.1", f"{item}... Cannot mail directly to {kind} ({ctl.unsafe})"
            )
            self._error(w, group, parent, reply, depth)
            return
        mailer = Mailer.PROG if item.kind is ItemKind.PROG else Mailer.FILE
        user = run_as(ctl.user, self.default_user, self.root_programs)
        target = Target(mailer, item.value, user)
        self._leaf(w, group, Leaf(parent, target), _target_key(target), depth)

    def _include(
        self,
        w: _Walk,
        item: Item,
        parent: Address,
        depth: int,
        chain: tuple[str, ...],
        group: Group,
        ctl: _Ctl,
    ) -> None:
        key = ("include", item.value)
        marker = f":include:{item.value}"  # so is every include file being read
        if marker in chain:
            self._loop(w, group, parent, depth, f"(:include:{item.value} includes itself)")
            return
        if key in w.seen:
            return
        if depth > self.max_depth:
            self._loop(w, group, parent, depth, f"({depth} aliases deep; {self.max_depth} max)")
            return
        w.seen.add(key)
        try:
            found = read_include(Path(item.value), ctl.reader_uid)
        except ItemFileError as exc:
            if exc.transient:
                w.resolution.temporary = Reply.of(
                    451, "4.3.0", f"Cannot open {exc.path}: {exc.reason}"
                )
                return
            reply = Reply.of(550, "5.3.0", f":include:{item.value}... Cannot open: {exc.reason}")
            self._error(w, group, parent, reply, depth)
            return
        for problem in found.problems:
            log.warning("%s", problem)
        w.note(depth, f"{parent}: included from {found.path}")
        inner = _Ctl(
            user=found.owner,
            reader_uid=ctl.reader_uid,
            unsafe=found.unsafe or ctl.unsafe,
        )
        for sub in found.items:
            self._item(w, sub, parent, depth + 1, (*chain, marker), group, inner)

    def _self_reference(self, w: _Walk, addr: Address, name: str, depth: int, group: Group) -> None:
        user = self._user(name)
        if user is None:
            self._loop(w, group, addr, depth, "")
            return
        self._mailbox(w, group, addr, user, depth)

    # ---- leaves --------------------------------------------------------------------------

    def _mailbox(self, w: _Walk, group: Group, addr: Address, user: LocalUser, depth: int) -> None:
        target = Target(Mailer.LOCAL, user.name)
        self._leaf(w, group, Leaf(addr, target), _target_key(target), depth)

    def _error(self, w: _Walk, group: Group, addr: Address, reply: Reply, depth: int) -> None:
        key = ("error", f"{str(addr).lower()}\0{reply.text}")
        self._leaf(w, group, Leaf(addr, error_target(reply)), key, depth)

    def _loop(self, w: _Walk, group: Group, addr: Address, depth: int, detail: str) -> None:
        text = f"<{addr}>... aliasing/forwarding loop broken {detail}".rstrip()
        self._error(w, group, addr, Reply.of(554, "5.4.6", text), depth)

    def _leaf(self, w: _Walk, group: Group, leaf: Leaf, key: Key, depth: int) -> None:
        if key in w.seen or (depth and key in w.exclude):
            w.note(depth, f"{_shown(leaf)}: duplicate, already a recipient")
            return
        w.seen.add(key)
        group.leaves.append(leaf)
        w.note(depth, self.describe(leaf, w.describe_remote))

    def describe(self, leaf: Leaf, describe_remote: Callable[[Address], str] | None = None) -> str:
        """Sendmail's ``-bv`` line for a destination."""
        target = leaf.target
        if target is None:
            if describe_remote is not None:
                return f"{leaf.address}... deliverable: {describe_remote(leaf.address)}"
            return (
                f"{leaf.address}... deliverable: mailer esmtp, host {leaf.address.domain}, "
                f"user {leaf.address}"
            )
        if target.mailer is Mailer.ERROR:
            reply = target_reply(target)
            return f"{leaf.address}... {reply.code} {reply.status} {reply.text}"
        if target.mailer is Mailer.LOCAL:
            user = self.users.lookup(target.value)
            where = f" ({'maildir' if user.maildir else 'mbox'} {user.mailbox})" if user else ""
            return f"{leaf.address}... deliverable: mailer local, user {target.value}{where}"
        return f"{target}... deliverable: mailer {target.mailer.log_name}, user {target.user}"

    # ---- helpers -------------------------------------------------------------------------

    def _qualify(self, text: str, parent: Address) -> Address | None:
        if "@" in text:
            return _parse(text)
        return Address(text, self._local_domain_of(parent))

    def _local_domain_of(self, parent: Address) -> str:
        return (
            parent.domain
            if parent.domain and self.is_local_domain(parent.domain)
            else self.hostname
        )


def _names(name: str) -> list[str]:
    """``user+detail`` is looked up as itself, then as ``user``."""
    user, detail = split_detail(name)
    return [name, user] if detail else [name]


def _domain_of(text: str) -> str:
    return text.rpartition("@")[2] if "@" in text else ""


def _recipient(text: str) -> Address | None:
    """A stored recipient: a mailbox, or bare ``postmaster``."""
    if "@" not in text:
        return Address(text.lower(), "") if text.lower() == "postmaster" else None
    return _parse(text)


def _parse(text: str) -> Address | None:
    try:
        return parse_mailbox(text, utf8=True)
    except AddressError:
        return None


def _norm(addr: Address | None) -> str:
    return "" if addr is None else f"{addr.local}@{addr.domain.lower()}"


def _target_key(target: Target) -> Key:
    if target.mailer is Mailer.LOCAL:
        return ("mailbox", target.value.lower())
    if target.mailer is Mailer.PROG:
        return ("prog", f"{target.value}\0{target.user}")
    return (target.mailer.value, target.value)


def _shown(leaf: Leaf) -> str:
    if leaf.target is not None and leaf.target.mailer in (Mailer.PROG, Mailer.FILE):
        return str(leaf.target)
    return str(leaf.address)


# ---- the command line ------------------------------------------------------------------------


def verify_lines(settings: Settings, address: str) -> list[str]:
    """``sendmail -bv``: one line per final destination; ``LookupError`` if unknown."""
    resolver, describe_remote, resolution = _explained(settings, address)
    if resolution.temporary is not None:
        return [f"{address}... {resolution.temporary.code} {resolution.temporary.text}"]
    leaves = resolution.leaves
    if len(leaves) == 1 and leaves[0].error is not None and not resolution.lists:
        error = leaves[0].error
        if error.status == "5.1.1":
            raise LookupError("User unknown")
    return [resolver.describe(leaf, describe_remote) for leaf in leaves]


def explain(settings: Settings, address: str) -> Resolution:
    """The full resolution of ``address`` with its trace (``mailwright address test``)."""
    return _explained(settings, address)[2]


def _explained(
    settings: Settings, address: str
) -> tuple[AddressResolver, Callable[[Address], str], Resolution]:
    addr = _parse(address) if "@" in address else Address(address, settings.hostname.lower())
    if addr is None:
        raise ValueError(f"{address}: not a valid address")
    resolver = AddressResolver.from_settings(settings, build_missing=False)
    describe_remote = _remote_describer(settings)
    return resolver, describe_remote, resolver.resolve(addr, describe_remote=describe_remote)


def _remote_describer(settings: Settings) -> Callable[[Address], str]:
    from mailwright.routing.router import Router

    router, _ = Router.from_settings(settings)

    def describe(address: Address) -> str:
        hop = router.route(address.domain)
        if hop.error is not None:
            return f"mailer error, {hop.error.code} {hop.error.status} {hop.error.text}"
        host = hop.socket_path or (hop.host if hop.mx else f"[{hop.host}]")
        port = f":{hop.port}" if hop.port else ""
        mailer = {"smtp": "esmtp"}.get(hop.transport.value, hop.transport.value)
        return f"mailer {mailer}, host {host}{port}, user {address}"

    return describe
