"""REQUIRETLS (RFC 8689) kept by every queue backend: a message queued with it reads back
with it, one queued without reads back without, whichever way the batch was written
(all together, or op by op after a failing op) and after a close and reopen. Each test
runs once per backend (``conftest.BACKENDS``)."""

from __future__ import annotations

from mailwright.core.envelope import BodyType, MailParams, Ret
from mailwright.queue.records import fresh_message
from mailwright.queue.store import InsertMessage, NewMessage, QueueStore, StoreError

from ..conftest import build_message
from .conftest import StoreFactory

# every other MAIL parameter set too: a column out of place would show in one of them
TLS_PARAMS = MailParams(
    size=1234,
    body=BodyType.EIGHT_BIT,
    smtputf8=True,
    ret=Ret.HDRS,
    envid="ENV-1",
    auth="<>",
    requiretls=True,
)


def with_tls(queue_id: str) -> NewMessage:
    return build_message(queue_id, params=TLS_PARAMS)


def requiretls(store: QueueStore, queue_id: str) -> bool:
    stored = store.get_message(queue_id)
    assert stored is not None
    return stored.envelope.params.requiretls


def test_requiretls_reads_back_as_it_was_queued(store: QueueStore) -> None:
    tls, plain = with_tls("TLS1"), build_message("PLAIN1")
    assert store.apply_batch([InsertMessage(tls), InsertMessage(plain)]) == [None, None]
    stored = store.get_message("TLS1")
    assert stored is not None and stored.envelope.params == TLS_PARAMS
    assert stored == fresh_message(tls)  # the first delivery's copy says the same
    assert requiretls(store, "PLAIN1") is False
    listed = {m.queue_id: m.envelope.params.requiretls for m in store.list_messages()}
    assert listed == {"TLS1": True, "PLAIN1": False}


def test_requiretls_is_kept_when_the_batch_is_written_op_by_op(store: QueueStore) -> None:
    assert store.apply_batch([InsertMessage(build_message("DUP"))]) == [None]
    results = store.apply_batch(
        [
            InsertMessage(with_tls("TLS2")),
            InsertMessage(build_message("DUP")),  # fails: the batch is done again op by op
            InsertMessage(build_message("PLAIN2")),
        ]
    )
    assert results[0] is None and isinstance(results[1], StoreError) and results[2] is None
    assert requiretls(store, "TLS2") is True
    assert requiretls(store, "PLAIN2") is False


def test_requiretls_survives_close_and_reopen(new_store: StoreFactory) -> None:
    first = new_store()
    first.open()
    first.apply_batch([InsertMessage(with_tls("TLS3")), InsertMessage(build_message("PLAIN3"))])
    first.close()
    second = new_store()
    second.open()
    assert requiretls(second, "TLS3") is True
    assert requiretls(second, "PLAIN3") is False
