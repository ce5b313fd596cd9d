"""``-od?`` and ``-O DeliveryMode=``: parsed into the mode the daemon is asked for, and the
header field that carries it, which the daemon takes out again."""

from __future__ import annotations

import pytest

from mailwright.cli.invocation import parse
from mailwright.core import deliverymode
from mailwright.core.headers import Header, HeaderList


@pytest.mark.parametrize(
    ("args", "mode"),
    [
        ([], "b"),
        (["-odb"], "b"),
        (["-odq"], "q"),
        (["-odd"], "q"),
        (["-odi"], "i"),
        (["-o", "di"], "i"),
        (["-O", "DeliveryMode=queue"], "q"),
        (["-ODeliveryMode=i"], "i"),
        (["-O", "deliverymode=deferred"], "q"),
        (["-odx"], "b"),  # unknown: ignored, like Sendmail's unknown options
        (["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"], "i"),
    ],
)
def test_delivery_mode_options(args: list[str], mode: str) -> None:
    assert parse(["sendmail", *args]).delivery_mode == mode


def test_the_daemon_takes_the_field_out() -> None:
    headers = HeaderList(
        [
            Header.make("Subject", "x"),
            Header.make(deliverymode.FIELD, "interactive"),
            Header.make("x-mailwright-delivery-mode", " Queue "),
        ]
    )
    assert deliverymode.take(headers) == deliverymode.QUEUE  # the last one counts
    assert [h.name for h in headers] == ["Subject"]
    nonsense = HeaderList([Header.make(deliverymode.FIELD, "now please")])
    assert deliverymode.take(nonsense) is None and not nonsense
    assert deliverymode.take(HeaderList()) is None
