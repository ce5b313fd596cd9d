"""The Sendmail command line parser: every flag, the real invocations, and garbage."""

from __future__ import annotations

import pytest

from mailwright.cli.invocation import UnsupportedError, UsageError, parse, parse_interval


def p(*args: str, program: str = "/usr/sbin/sendmail"):
    return parse([program, *args])


def test_no_flags_is_deliver_mode_with_recipients() -> None:
    inv = p("user", "other@example.org")
    assert inv.mode == "m" and inv.mode_name == "deliver"
    assert inv.recipients == ["user", "other@example.org"]
    assert not inv.extract_recipients and not inv.ignore_dots and inv.sender is None


def test_cron_invocation() -> None:
    inv = p("-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root")
    assert inv.full_name == "CronDaemon"
    assert inv.ignore_dots and inv.extract_recipients
    assert inv.sender == "root" and inv.error_mode == "m"
    assert inv.recipients == []


def test_php_and_mutt_invocations() -> None:
    php = p("-t", "-i")
    assert php.extract_recipients and php.ignore_dots
    mutt = p("-oi", "-oem", "--", "user")
    assert mutt.ignore_dots and mutt.recipients == ["user"]
    mutt2 = p("-oi", "-f", "sender@x.test", "--", "rcpt1@y.test", "-rcpt2")
    assert mutt2.sender == "sender@x.test" and mutt2.recipients == ["rcpt1@y.test", "-rcpt2"]


def test_clustered_flags_and_attached_values() -> None:
    inv = p("-tiv", "-fme@x.test", "-FJoe Bloggs")
    assert inv.extract_recipients and inv.ignore_dots and inv.verbose
    assert inv.sender == "me@x.test" and inv.full_name == "Joe Bloggs"
    inv = p("-tf", "root")  # a value-taking letter at the end of a cluster takes the next word
    assert inv.extract_recipients and inv.sender == "root"


def test_options_stop_at_the_first_recipient() -> None:
    inv = p("-i", "user", "-t")
    assert inv.recipients == ["user", "-t"] and not inv.extract_recipients


@pytest.mark.parametrize("value", ["<>", "", " <> "])
def test_null_sender(value: str) -> None:
    assert p("-f", value, "u").sender == ""
    assert p("-r", value, "u").sender == ""


def test_dsn_flags() -> None:
    inv = p("-N", "success,failure", "-R", "hdrs", "-V", "env-1", "-B", "8bitmime", "-U", "u")
    assert inv.notify == "SUCCESS,FAILURE" and inv.ret == "HDRS" and inv.envid == "env-1"
    assert inv.body_type == "8BITMIME" and inv.smtputf8
    assert p("-Nnever", "u").notify == "NEVER"
    assert p("-B7BIT", "u").body_type == "7BIT"


def test_hop_count_config_and_ignored_flags() -> None:
    inv = p(
        "-h",
        "12",
        "-C",
        "/etc/x.toml",
        "-L",
        "tag",
        "-X",
        "/dev/null",
        "-d0.1",
        "-G",
        "-n",
        "-m",
        "-s",
        "-c",
        "-T",
        "-Am",
        "-pesmtp:host",
        "-Mrfoo",
        "-D",
        "/tmp/d",
        "u",
    )
    assert inv.hop_count == 12 and inv.config == "/etc/x.toml" and inv.recipients == ["u"]


def test_unknown_o_and_O_options_are_ignored_known_ones_honoured() -> None:
    inv = p(
        "-oXyz",
        "-odq",
        "-odb",
        "-oQ/var/spool",
        "-om",
        "-oL9",
        "-O",
        "Timeout.queuereturn=now",
        "-O",
        "NoSuchOption=1",
        "u",
    )
    assert inv.recipients == ["u"] and not inv.ignore_dots
    assert p("-O", "IgnoreDots=true", "u").ignore_dots
    assert not p("-oi", "-O", "IgnoreDots=false", "u").ignore_dots
    assert p("-oeq", "u").error_mode == "q"
    assert p("-O", "ErrorMode=q", "u").error_mode == "q"


def test_modes_and_program_names() -> None:
    assert p("-bs").mode == "s"
    assert p("-bd").mode == "d" and p("-bD").mode == "D"
    assert p("-bp").mode == "p" and p("-bP").mode == "P"
    assert p("-bi").mode == "i" and p("-I").mode == "i"
    assert p("-bv", "a").mode == "v" and p("-b", "m", "a").mode == "m"
    assert p(program="/usr/bin/mailq").mode == "p"
    assert p(program="newaliases").mode == "i"
    assert parse(["/x/mailwright/cli/sendmail.py", "u"]).program == "sendmail"


def test_queue_runs() -> None:
    once = p("-q")
    assert once.queue_run is not None and once.queue_run.interval is None
    assert p("-q30m").queue_run.interval == 1800
    assert p("-q1h30m").queue_run.interval == 5400
    assert p("-q15").queue_run.interval == 900  # a bare number is minutes
    run = p("-qIABC", "-qRexample.org", "-qSroot").queue_run
    assert (run.id_contains, run.recipient, run.sender) == ("ABC", "example.org", "root")
    daemon = p("-bd", "-q30m")
    assert daemon.mode == "d" and daemon.queue_run.interval == 1800
    assert p("-qf").queue_run.interval is None
    assert p("-qp5m").queue_run.interval == 300


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-Z",), "invalid option -- 'Z'"),
        (("-tZ",), "invalid option -- 'Z'"),
        (("-f",), "requires an argument -- 'f'"),
        (("-bz",), "invalid operation mode"),
        (("-bmm",), "invalid operation mode"),
        (("-N", "sometimes"), "-N wants never"),
        (("-N", "never,success"), "-N wants never"),
        (("-R", "some"), "-R wants full or hdrs"),
        (("-B", "BINARYMIME"), "-B wants 7BIT or 8BITMIME"),
        (("-h", "x"), "-h wants a hop count"),
        (("-qX",), "invalid queue option"),
        (("-q!Rfoo",), "negated"),
        (("-qR",), "wants a substring"),
        (("-q30x",), "invalid queue interval"),
        (("-o",), "requires an argument"),
    ],
)
def test_garbage_is_a_usage_error(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        p(*args)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("-bt", "the address test shell (-bt) is not supported; use -bv ADDRESS to see how"),
        ("-bh", "the host status cache (-bh) is not supported"),
        ("-bH", "purging the host status cache (-bH) is not supported"),
        ("-ba", "ARPANET mode (-ba) is not supported"),
    ],
)
def test_real_but_unsupported_modes(mode: str, message: str) -> None:
    with pytest.raises(UnsupportedError) as caught:
        p(mode)
    assert str(caught.value).startswith(message)
    assert str(caught.value).count("is not supported") == 1


def test_parse_interval() -> None:
    assert parse_interval("90s") == 90
    assert parse_interval("1d") == 86400
    with pytest.raises(UsageError):
        parse_interval("0")
