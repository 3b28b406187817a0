"""The evaluation broker: one evaluation per job out at a time, redelivery on failure."""

import asyncio

from shoal.jobs.structs import Evaluation
from shoal.server.broker import DELIVERY_LIMIT, EvalBroker


def ev(i: str, job: str) -> Evaluation:
    return Evaluation(id=i, job_id=job)


def test_serializes_per_job_and_releases_on_ack():
    async def run():
        b = EvalBroker()
        b.enqueue(ev("1", "a"))
        b.enqueue(ev("2", "a"))
        b.enqueue(ev("3", "b"))
        b.enqueue(ev("1", "a"))  # duplicate: ignored
        first = await b.dequeue()
        second = await b.dequeue()
        assert {first.id, second.id} == {"1", "3"}
        assert b._ready.empty()  # "2" waits behind "1"
        b.ack(first if first.id == "1" else second)
        assert (await asyncio.wait_for(b.dequeue(), 1)).id == "2"

    asyncio.run(run())


def test_nack_redelivers_until_the_limit():
    async def run():
        b = EvalBroker()
        b.enqueue(ev("1", "a"))
        for _ in range(DELIVERY_LIMIT - 1):
            e = await b.dequeue()
            assert b.nack(e)
        e = await b.dequeue()
        assert not b.nack(e)

    asyncio.run(run())


def test_delayed_evaluations_wait_until_their_time():
    import time

    async def run():
        b = EvalBroker()
        later = Evaluation(id="late", job_id="a", wait_until=time.time() + 0.3)
        b.enqueue(later)
        b.enqueue(ev("now", "b"))
        assert (await asyncio.wait_for(b.dequeue(), 1)).id == "now"
        with __import__("pytest").raises(TimeoutError):
            await asyncio.wait_for(b.dequeue(), 0.1)
        assert (await asyncio.wait_for(b.dequeue(), 1)).id == "late"

    asyncio.run(run())
