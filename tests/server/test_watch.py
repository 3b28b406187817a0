"""The state watch: blocking queries and subscribers woken by committed changes, no change missed."""

from __future__ import annotations

import asyncio
import threading

from shoal.raft.fsm import ApplyResult, Change
from shoal.server.watch import StateWatch


def applied(index: int, topic: str = "Job") -> ApplyResult:
    return ApplyResult(index, changes=[Change(index, topic, f"{topic}Registered", f"k{index}")])


def from_raft_thread(watch: StateWatch, result: ApplyResult) -> None:
    t = threading.Thread(target=watch.on_apply, args=(result,))
    t.start()
    t.join()


def test_a_waiter_is_woken_by_its_topic_from_the_raft_thread():
    async def main() -> tuple[bool, int]:
        watch = StateWatch(asyncio.get_running_loop())
        waiting = asyncio.ensure_future(watch.wait(["Job"], 5.0, seen=0))
        await asyncio.sleep(0)  # registered
        from_raft_thread(watch, applied(1, "Node"))
        from_raft_thread(watch, applied(2, "Job"))
        return await waiting, watch.index

    assert asyncio.run(main()) == (True, 2)


def test_other_topics_do_not_wake_a_waiter():
    async def main() -> bool:
        watch = StateWatch(asyncio.get_running_loop())
        waiting = asyncio.ensure_future(watch.wait(["Allocation"], 0.2, seen=0))
        await asyncio.sleep(0)
        from_raft_thread(watch, applied(1, "Job"))
        return await waiting

    assert asyncio.run(main()) is False  # timed out


def test_a_change_applied_between_a_read_and_the_wait_is_not_missed():
    async def main() -> bool:
        watch = StateWatch(asyncio.get_running_loop())
        # the caller read the state at index 4; index 5 is applied (no one waits yet: no hop) ...
        from_raft_thread(watch, applied(4))
        from_raft_thread(watch, applied(5))
        # ... before it registers: it returns at once, and the caller reads again
        return await asyncio.wait_for(watch.wait(["Job"], 5.0, seen=4), 1.0)

    assert asyncio.run(main()) is True


def test_wait_index_answers_at_once_or_when_applied():
    async def main() -> tuple[bool, bool, bool]:
        watch = StateWatch(asyncio.get_running_loop())
        from_raft_thread(watch, applied(3))
        now = await asyncio.wait_for(watch.wait_index(3, 5.0), 1.0)
        later = asyncio.ensure_future(watch.wait_index(7, 5.0))
        await asyncio.sleep(0)
        from_raft_thread(watch, applied(7, "Evaluation"))
        never = await watch.wait_index(100, 0.1)
        return now, await later, never

    assert asyncio.run(main()) == (True, True, False)


def test_subscribers_hear_every_change_until_they_unsubscribe():
    async def main() -> list[int]:
        watch = StateWatch(asyncio.get_running_loop())
        heard: list[int] = []
        got_two = asyncio.Event()

        def on_changes(changes: list[Change]) -> None:
            heard.extend(c.index for c in changes)
            if len(heard) == 2:
                got_two.set()

        unsubscribe = watch.subscribe(on_changes)
        from_raft_thread(watch, applied(1))
        from_raft_thread(watch, applied(2, "Node"))
        await asyncio.wait_for(got_two.wait(), 5.0)
        unsubscribe()
        from_raft_thread(watch, applied(3))
        await watch.wait_index(3, 0.1)  # applied; nothing is delivered to a subscriber that left
        return heard

    assert asyncio.run(main()) == [1, 2]


class CountingLoop:
    """Records the wake-ups a watch asks of its loop."""

    def __init__(self) -> None:
        self.wakeups = 0

    def call_soon_threadsafe(self, *args: object) -> None:
        self.wakeups += 1


def test_with_no_one_waiting_the_loop_is_not_woken():
    loop = CountingLoop()
    watch = StateWatch(loop)  # type: ignore[arg-type]
    for i in range(1, 101):
        watch.on_apply(applied(i))
    assert (watch.index, loop.wakeups) == (100, 0)
    watch.subscribe(lambda changes: None)
    watch.on_apply(applied(101))
    assert loop.wakeups == 1
