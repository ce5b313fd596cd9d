"""core.Reply: value semantics without dataclasses (it is imported on sendmail's path)."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from mailwright.core.reply import Reply


def test_equality_and_hash_ignore_who_wrote_it() -> None:
    ours = Reply.of(550, "5.1.1", "no such user")
    theirs = Reply.of(550, "5.1.1", "no such user", from_peer=True)
    assert ours == theirs and hash(ours) == hash(theirs) and len({ours, theirs}) == 1
    assert ours != Reply.of(550, "5.1.2", "no such user")
    assert ours != Reply.of(551, "5.1.1", "no such user")
    assert ours != "550 5.1.1 no such user"


def test_it_is_immutable() -> None:
    reply = Reply.of(250, None, "ok")
    with pytest.raises(AttributeError):
        reply.code = 251
    with pytest.raises(AttributeError):
        reply.extra = 1


def test_with_status_and_with_code_keep_text_and_origin() -> None:
    peer = Reply.of(554, None, "a", "b", from_peer=True)
    assert peer.with_status("5.0.0") == Reply.of(554, "5.0.0", "a", "b")
    assert peer.with_status("5.0.0").from_peer
    lowered = peer.with_code(454, "4.0.0")
    assert (lowered.code, lowered.status, lowered.lines, lowered.from_peer) == (
        454,
        "4.0.0",
        ("a", "b"),
        True,
    )


def test_copy_pickle_and_repr_round_trip() -> None:
    reply = Reply.of(451, "4.3.0", "later", from_peer=True)
    for other in (copy.copy(reply), copy.deepcopy(reply), pickle.loads(pickle.dumps(reply))):
        assert other == reply and other.from_peer
    assert repr(reply) == ("Reply(code=451, status='4.3.0', lines=('later',), from_peer=True)")


def test_importing_it_loads_no_dataclasses() -> None:
    code = "import sys, mailwright.core.reply; print('dataclasses' in sys.modules)"
    src = Path(__file__).resolve().parents[3] / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, check=True, text=True
    )
    assert out.stdout.strip() == "False"
