"""Resolving local addresses: recursion, loops, duplicates, lists, .forward, :include:,
the virtual user table, and the RCPT-time existence check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailwright.core.address import Address
from mailwright.core.target import Mailer, Target
from mailwright.routing.aliases import AliasTable, compile_aliases
from mailwright.routing.resolution import AddressResolver, Leaf, Resolution
from mailwright.routing.virtual import VirtualTable
from tests.support.localusers import StaticUsers
from tests.support.peers import is_root, peer, require_peer

root_only = peer("root", is_root(), "gives files to other owners")
NOBODY = 65534


class World:
    """Aliases, users and a virtual table in a temp dir, and a resolver over them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.users = StaticUsers(tmp, ["alice", "bob", "carol", "root"])
        self.alias_file = tmp / "aliases"
        self.virtual_file = tmp / "virtusertable"
        self.aliases: AliasTable | None = None
        self.virtual: VirtualTable | None = None

    def set_aliases(self, text: str) -> None:
        self.alias_file.write_text(text)
        compile_aliases(self.alias_file, self.tmp / "aliases.db")
        self.aliases = AliasTable(self.tmp / "aliases.db", check_interval=0)

    def set_virtual(self, text: str) -> None:
        self.virtual_file.write_text(text)
        self.virtual = VirtualTable(self.virtual_file)
        self.virtual.file._interval = 0

    def resolver(self, **kw: object) -> AddressResolver:
        return AddressResolver(
            hostname="mx.test",
            local_domains=["mx.test", "localhost"],
            users=self.users,
            aliases=self.aliases,
            virtual=self.virtual,
            **kw,  # type: ignore[arg-type]
        )

    def resolve(self, address: str, **kw: object) -> Resolution:
        local, _, domain = address.rpartition("@")
        return self.resolver(**kw).resolve(Address(local, domain))


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def mailbox(address: str, user: str) -> Leaf:
    local, _, domain = address.rpartition("@")
    return Leaf(Address(local, domain), Target(Mailer.LOCAL, user))


def shown(r: Resolution) -> list[str]:
    """Each destination as text: user names, |programs, /files, addresses, or errors."""
    out = []
    for leaf in r.leaves:
        if leaf.error is not None:
            out.append(f"{leaf.address} {leaf.error.code} {leaf.error.status}")
        elif leaf.target is None:
            out.append(str(leaf.address))
        elif leaf.target.mailer is Mailer.LOCAL:
            out.append(leaf.target.value)
        else:
            out.append(str(leaf.target))
    return out


# ---- users and aliases -----------------------------------------------------------------------


def test_a_user_is_delivered_as_itself(world: World) -> None:
    world.set_aliases("staff: alice\n")
    r = world.resolve("Alice@mx.test")
    assert r.itself() == mailbox("Alice@mx.test", "alice")


def test_unknown_user(world: World) -> None:
    world.set_aliases("staff: alice\n")
    assert shown(world.resolve("nosuch@mx.test")) == ["nosuch@mx.test 550 5.1.1"]
    assert world.resolve("nosuch@mx.test").leaves[0].error.text == (  # type: ignore[union-attr]
        "<nosuch@mx.test>... User unknown"
    )


def test_recursion_and_duplicates(world: World) -> None:
    world.set_aliases(
        "all: staff, team, alice, bob@remote.test, Bob@REMOTE.test\n"
        "staff: alice, carol\n"
        "team: staff, bob\n"
    )
    r = world.resolve("all@mx.test")
    assert shown(r) == ["alice", "carol", "bob", "bob@remote.test", "Bob@remote.test"]
    assert r.lists == [] and r.itself() is None


def test_alias_names_are_case_insensitive_and_qualified_with_the_domain(world: World) -> None:
    world.set_aliases("Staff: alice, Dave\ndave: bob\n")
    r = world.resolve("STAFF@localhost")
    assert [str(leaf.address) for leaf in r.leaves] == ["alice@localhost", "bob@localhost"]
    assert shown(r) == ["alice", "bob"]


def test_depth_limit(world: World) -> None:
    world.set_aliases("".join(f"a{i}: a{i + 1}\n" for i in range(15)) + "a15: alice\n")
    assert shown(world.resolve("a6@mx.test")) == ["alice"]  # 10 aliases deep: fine
    assert shown(world.resolve("a5@mx.test")) == ["alice@mx.test 554 5.4.6"]
    r = world.resolve("a0@mx.test")
    assert shown(r) == ["a11@mx.test 554 5.4.6"]
    assert r.leaves[0].error.text == (  # type: ignore[union-attr]
        "<a11@mx.test>... aliasing/forwarding loop broken (11 aliases deep; 10 max)"
    )


def test_loop_without_a_real_user(world: World) -> None:
    world.set_aliases("x: y\ny: z, alice\nz: x\n")
    r = world.resolve("x@mx.test")
    assert shown(r) == ["x@mx.test 554 5.4.6", "alice"]
    assert "aliasing/forwarding loop broken" in r.leaves[0].error.text  # type: ignore[union-attr]


def test_self_reference_delivers_to_the_real_user(world: World) -> None:
    world.set_aliases("alice: alice, bob\nbob: carol, bob@remote.test\n")
    assert shown(world.resolve("alice@mx.test")) == ["alice", "carol", "bob@remote.test"]


def test_backslash_user_skips_aliasing(world: World) -> None:
    world.set_aliases("alice: \\alice, bob\nbob: \\nosuch\n")
    assert shown(world.resolve("alice@mx.test")) == ["alice", "nosuch@mx.test 550 5.1.1"]


def test_detail_falls_back_to_the_user_or_alias(world: World) -> None:
    world.set_aliases("staff: alice, bob\nstaff+urgent: carol\n")
    assert shown(world.resolve("staff+x@mx.test")) == ["alice", "bob"]
    assert shown(world.resolve("staff+urgent@mx.test")) == ["carol"]
    r = world.resolve("alice+news@mx.test")
    assert r.itself() == mailbox("alice+news@mx.test", "alice")


def test_postmaster_always_exists(world: World) -> None:
    world.set_aliases("staff: alice\n")
    assert shown(world.resolve("PostMaster@mx.test")) == ["root"]
    assert shown(world.resolve("postmaster@")) == ["root"]  # bare RCPT TO:<postmaster>
    world.set_aliases("postmaster: alice, bob\n")
    assert shown(world.resolve("postmaster@mx.test")) == ["alice", "bob"]


def test_excluded_destinations_are_not_repeated(world: World) -> None:
    world.set_aliases("staff: alice, bob, carol\n")
    resolver = world.resolver()
    exclude = {resolver.key("bob@mx.test"), resolver.key("x@y.test", Target(Mailer.LOCAL, "carol"))}
    r = resolver.resolve(Address("staff", "mx.test"), exclude)
    assert shown(r) == ["alice"]


def test_programs_and_files_are_controlled_by_the_alias_file_owner(world: World) -> None:
    world.set_aliases('log: "|/usr/bin/logger -t mail", /var/log/mail.mbox, alice\n')
    r = world.resolve("log@mx.test")
    owner = "nobody" if os.getuid() == 0 else world.users.lookup("x") or ""
    prog, file, _ = (leaf.target for leaf in r.leaves)
    assert prog == Target(Mailer.PROG, "/usr/bin/logger -t mail", prog.user)  # type: ignore[union-attr]
    assert file.mailer is Mailer.FILE and file.value == "/var/log/mail.mbox"  # type: ignore[union-attr]
    if os.getuid() == 0:
        assert prog.user == owner == "nobody"  # type: ignore[union-attr]
    assert [str(leaf.address) for leaf in r.leaves] == ["log@mx.test"] * 2 + ["alice@mx.test"]


# ---- mailing lists -----------------------------------------------------------------------------


def test_list_with_owner_forms_its_own_group(world: World) -> None:
    world.set_aliases(
        "list: alice, bob, ext@remote.test\n"
        "owner-list: list-request\n"
        "list-request: carol\n"
        "plain: list, bob, dave@remote.test\n"
    )
    r = world.resolve("list@mx.test")
    assert r.groups[0].leaves == []
    (group,) = r.lists
    assert group.owner == Address("carol", "mx.test")  # the owner alias's single address
    assert shown(r) == ["alice", "bob", "ext@remote.test"]
    nested = world.resolve("plain@mx.test")
    assert [
        shown_leaf.target.value for shown_leaf in nested.groups[0].leaves if shown_leaf.target
    ] == []
    assert [str(leaf.address) for leaf in nested.groups[0].leaves] == ["dave@remote.test"]
    assert [str(leaf.address) for leaf in nested.lists[0].leaves] == [
        "alice@mx.test",
        "bob@mx.test",
        "ext@remote.test",
    ]


def test_list_owner_with_several_addresses_is_owner_name(world: World) -> None:
    world.set_aliases("l: alice\nowner-l: bob, carol\n")
    (group,) = world.resolve("l@mx.test").lists
    assert group.owner == Address("owner-l", "mx.test")


# ---- :include: --------------------------------------------------------------------------------


def test_include_file(world: World) -> None:
    members = world.tmp / "members"
    members.write_text("# the team\nalice, bob\n\n  carol@remote.test\n")
    members.chmod(0o644)
    world.set_aliases(f"team: :include:{members}, dave@remote.test\n")
    assert shown(world.resolve("team@mx.test")) == [
        "alice",
        "bob",
        "carol@remote.test",
        "dave@remote.test",
    ]


def test_include_missing_and_include_loop(world: World) -> None:
    loop = world.tmp / "loop"
    loop.write_text(f":include:{loop}\nalice\n")
    loop.chmod(0o644)
    world.set_aliases(f"gone: :include:{world.tmp}/nothing, bob\nloops: :include:{loop}\n")
    r = world.resolve("gone@mx.test")
    assert shown(r) == ["gone@mx.test 550 5.3.0", "bob"]
    assert "Cannot open: No such file or directory" in r.leaves[0].error.text  # type: ignore[union-attr]
    loops = world.resolve("loops@mx.test")
    assert shown(loops) == ["loops@mx.test 554 5.4.6", "alice"]
    assert "includes itself" in loops.leaves[0].error.text  # type: ignore[union-attr]


def test_world_writable_include_may_not_run_programs(world: World) -> None:
    members = world.tmp / "members"
    members.write_text('alice, "|/bin/cat", /tmp/file\n')
    members.chmod(0o666)
    world.set_aliases(f"team: :include:{members}\n")
    r = world.resolve("team@mx.test")
    assert shown(r)[0] == "alice"
    assert [leaf.error.status for leaf in r.leaves[1:]] == ["5.7.1", "5.7.1"]  # type: ignore[union-attr]
    assert "Cannot mail directly to programs (group or world writable)" in r.leaves[1].error.text  # type: ignore[union-attr]


@root_only
def test_include_owner_runs_its_programs(world: World) -> None:
    members = world.tmp / "members"
    members.write_text('"|/bin/cat"\n')
    members.chmod(0o644)
    os.chown(members, 1000, 1000)  # cloudsdk: a user with a login shell
    world.set_aliases(f"team: :include:{members}\n")
    (leaf,) = world.resolve("team@mx.test").leaves
    assert leaf.target == Target(Mailer.PROG, "/bin/cat", "cloudsdk")


@root_only
def test_include_from_forward_must_be_readable_by_the_user(world: World) -> None:
    secret = world.tmp / "secret"
    secret.write_text("alice\n")
    secret.chmod(0o600)  # root's only
    user = world.users.add("nob", uid=NOBODY, gid=NOBODY)
    home = Path(user.home)
    home.chmod(0o755)
    (home / ".forward").write_text(f":include:{secret}\n")
    os.chown(home / ".forward", NOBODY, NOBODY)
    r = world.resolve("nob@mx.test", forward_path=["$z/.forward"])
    assert shown(r) == ["nob@mx.test 550 5.3.0"]
    assert "Permission denied" in r.leaves[0].error.text  # type: ignore[union-attr]


# ---- .forward ---------------------------------------------------------------------------------


def write_forward(world: World, user: str, text: str, mode: int = 0o644) -> Path:
    path = Path(world.users.users[user].home) / ".forward"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_forward_after_aliases(world: World) -> None:
    world.set_aliases("staff: alice\n")
    write_forward(world, "alice", '# keep a copy\n\\alice, bob@remote.test\n"|/bin/cat"\n')
    r = world.resolve("staff@mx.test")
    assert shown(r) == ["alice", "bob@remote.test", '"|/bin/cat"']
    assert r.leaves[2].target.user == world.users.users["alice"].name  # type: ignore[union-attr]


def test_forward_to_self_is_the_mailbox(world: World) -> None:
    write_forward(world, "alice", "alice, carol\n")
    assert shown(world.resolve("alice@mx.test")) == ["alice", "carol"]


def test_forward_path_order(world: World) -> None:
    home = Path(world.users.users["alice"].home)
    (home / ".forward.mx.test").write_text("bob\n")
    write_forward(world, "alice", "carol\n")
    r = world.resolve("alice@mx.test", forward_path=["$z/.forward.$w", "$z/.forward"])
    assert shown(r) == ["bob"]


def test_group_writable_forward_is_ignored(world: World, caplog: pytest.LogCaptureFixture) -> None:
    path = write_forward(world, "alice", "bob\n", mode=0o664)
    assert shown(world.resolve("alice@mx.test")) == ["alice"]
    assert f"{path}: .forward ignored: group or world writable" in caplog.text


def test_forward_in_a_world_writable_directory_is_ignored(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    write_forward(world, "alice", "bob\n")
    Path(world.users.users["alice"].home).chmod(0o777)
    assert shown(world.resolve("alice@mx.test")) == ["alice"]
    assert "in a group or world writable directory" in caplog.text


@root_only
def test_forward_owned_by_someone_else_is_ignored(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    user = world.users.add("dave", uid=1000, gid=1000)
    path = write_forward(world, "dave", "bob\n")
    os.chown(path, NOBODY, NOBODY)
    assert shown(world.resolve("dave@mx.test")) == ["dave"]
    assert "owned by uid 65534, not by the user or root" in caplog.text
    os.chown(path, user.uid, user.gid)
    assert shown(world.resolve("dave@mx.test")) == ["bob"]


def test_forward_symlink_to_a_file_the_user_does_not_own_is_ignored(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    target = world.tmp / "other"
    target.write_text("bob\n")
    require_peer("root", is_root(), "gives a file to another owner")
    os.chown(target, NOBODY, NOBODY)
    (Path(world.users.users["alice"].home) / ".forward").symlink_to(target)
    assert shown(world.resolve("alice@mx.test")) == ["alice"]
    assert ".forward ignored" in caplog.text


def test_missing_home_directory_is_not_a_problem(world: World) -> None:
    world.users.add("homeless", home=False)
    assert shown(world.resolve("homeless@mx.test")) == ["homeless"]


def test_no_valid_shell_means_no_programs_from_forward(world: World) -> None:
    world.users.add("locked", shell="/usr/sbin/nologin")
    write_forward(world, "locked", 'bob, "|/bin/cat"\n')
    r = world.resolve("locked@mx.test")
    assert shown(r) == ["bob", "locked@mx.test 550 5.7.1"]
    assert "has no valid shell" in r.leaves[1].error.text  # type: ignore[union-attr]


def test_forwarding_loop_between_users(world: World) -> None:
    write_forward(world, "alice", "bob\n")
    write_forward(world, "bob", "alice\n")
    assert shown(world.resolve("alice@mx.test")) == ["alice"]  # alice is a real user


# ---- the virtual user table -------------------------------------------------------------------


VIRTUAL = """\
info@virt.test        alice
sales@virt.test       bob@remote.test
staff+*@virt.test     carol
staff@virt.test       bob
gone@virt.test        error:5.1.1 This address no longer exists
@catch.test           %1@remote.test
@detail.test          %1-%2@remote.test
"""


def test_virtual_user_table(world: World) -> None:
    world.set_aliases("staff: alice\n")
    world.set_virtual(VIRTUAL)
    assert shown(world.resolve("info@virt.test")) == ["alice"]
    assert shown(world.resolve("sales@virt.test")) == ["bob@remote.test"]
    assert shown(world.resolve("staff+x@virt.test")) == ["carol"]
    assert shown(world.resolve("staff@virt.test")) == ["bob"]
    assert shown(world.resolve("Who@Catch.test")) == ["who@remote.test"]
    assert shown(world.resolve("a+b@detail.test")) == ["a-b@remote.test"]
    gone = world.resolve("gone@virt.test")
    assert shown(gone) == ["gone@virt.test 550 5.1.1"]
    assert gone.leaves[0].error.text == "This address no longer exists"  # type: ignore[union-attr]
    assert shown(world.resolve("nobody@virt.test")) == ["nobody@virt.test 550 5.1.1"]


def test_virtual_rewrite_loop_is_an_error_not_a_silent_drop(world: World) -> None:
    world.set_virtual("a@virt.test  b@virt.test\nb@virt.test  a@virt.test\n")
    assert shown(world.resolve("a@virt.test")) == ["a@virt.test 554 5.4.6"]


def test_virtual_table_problems(world: World) -> None:
    world.set_virtual("nokey  alice\na@b.test  alice, bob\nc@d.test  error:5.1.1:450 x\n")
    assert world.virtual is not None
    world.virtual.lookup("a@b.test")
    assert [str(p) for p in world.virtual.file.errors] == [
        f"{world.virtual_file}:1: nokey: key must be user@domain or @domain",
        f"{world.virtual_file}:2: alice, bob: one address or local name per entry",
        f"{world.virtual_file}:3: status 5.1.1 does not match reply code 450",
    ]


# ---- RCPT time ---------------------------------------------------------------------------------


def test_rcpt_check(world: World) -> None:
    world.set_aliases("staff: alice\n")
    world.set_virtual(VIRTUAL)
    resolver = world.resolver(virtual_domains=["virt.test"])

    def check(text: str) -> str | None:
        local, _, domain = text.rpartition("@")
        reply = resolver.check(Address(local, domain))
        return None if reply is None else f"{reply.code} {reply.status} {reply.text}"

    assert check("staff@mx.test") is None
    assert check("alice+x@mx.test") is None
    assert check("Postmaster@mx.test") is None
    assert check("anyone@remote.test") is None  # not ours
    assert check("nosuch@mx.test") == "550 5.1.1 <nosuch@mx.test>... User unknown"
    assert check("info@virt.test") is None
    assert check("gone@virt.test") == "550 5.1.1 This address no longer exists"
    assert check("else@virt.test") == "550 5.1.1 <else@virt.test>... User unknown"
