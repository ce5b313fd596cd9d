"""manager.answers: what an LMTP client waiting for local deliveries is answered, and when."""

from __future__ import annotations

import asyncio

from mailwright.core.reply import Reply
from mailwright.manager.answers import Answers

FAILED = Reply.of(550, "5.1.1", "User unknown")
DONE = Reply.of(250, "2.0.0", "Delivered")


def test_settled_replies_end_the_wait_and_addresses_must_match() -> None:
    async def main() -> None:
        answers = Answers()
        waiting = answers.watch("Q1", {0: "a@x", 2: "c@x"})
        assert answers.take("Q1", 1, "b@x") is None  # not waited for (relayed)
        assert answers.take("Q1", 0, "other@x") is None  # a milter changed it
        taken = answers.take("Q1", 0, "a@x")
        assert taken is waiting and answers.take("Q1", 0, "a@x") is None  # once
        answers.kept("Q1", [(2, "c@x")], DONE)
        asyncio.get_running_loop().call_soon(waiting.settle, 0, FAILED)
        assert await waiting.outcomes(30) == {0: FAILED, 2: DONE}
        answers.forget(waiting)
        assert answers.take("Q1", 2, "c@x") is None

    asyncio.run(main())


def test_past_the_deadline_nothing_more_is_taken_but_what_was_is_awaited() -> None:
    async def main() -> None:
        answers = Answers()
        waiting = answers.watch("Q2", {0: "a@x", 1: "b@x"})
        assert answers.take("Q2", 0, "a@x") is waiting  # being committed as FAILED
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, waiting.settle, 0, FAILED)  # the commit ends after the deadline
        outcomes = await waiting.outcomes(0.01)
        assert outcomes == {0: FAILED}  # index 1: answered 250 by the session, still ours
        assert answers.take("Q2", 1, "b@x") is None  # recorded as any queued mail

    asyncio.run(main())
