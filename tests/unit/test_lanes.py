"""The lanes' priority gate and the deadline scan's wait for case actions (no I/O)."""

from __future__ import annotations

import asyncio

from schemas import topics
from streams.lanes import BULK_TOPICS, URGENT_TOPICS, UrgentFirst
from streams.periodic import PendingActions


def test_every_input_topic_is_in_exactly_one_lane() -> None:
    assert sorted(URGENT_TOPICS + BULK_TOPICS) == sorted(topics.INPUTS)
    assert topics.INCIDENTS in URGENT_TOPICS and topics.CASE_ACTIONS in URGENT_TOPICS
    assert topics.COMMANDS in URGENT_TOPICS and topics.CLAIMS in BULK_TOPICS


async def test_bulk_takes_whole_batches_while_no_urgent_work_was_seen() -> None:
    gate = UrgentFirst(step=50, quiet=60)
    assert await gate.bulk_turn(1000) == 1000


async def test_bulk_waits_for_an_urgent_batch_then_takes_small_steps() -> None:
    gate = UrgentFirst(step=50, quiet=60)
    gate.urgent_started()
    turn = asyncio.ensure_future(gate.bulk_turn(1000))
    await asyncio.sleep(0.01)
    assert not turn.done()  # no bulk transaction starts during an urgent batch
    gate.urgent_done()
    assert await turn == 50  # urgent work was seen within `quiet`: one small step
    assert gate.bulk_waits == 1
    assert await gate.bulk_turn(20) == 20


async def test_two_urgent_batches_hold_the_bulk_until_both_ended() -> None:
    gate = UrgentFirst(step=50, quiet=0)
    gate.urgent_started()
    gate.urgent_started()
    gate.urgent_done()
    turn = asyncio.ensure_future(gate.bulk_turn(1000))
    await asyncio.sleep(0.01)
    assert not turn.done()
    gate.urgent_done()
    assert await turn == 1000  # quiet=0: urgent work is over, a whole batch again


async def test_the_step_follows_the_time_recent_bulk_transactions_took() -> None:
    gate = UrgentFirst(step=50, quiet=60, step_seconds=0.05, min_step=10)
    gate.urgent_seen()
    assert await gate.bulk_turn(1000) == 50  # nothing timed yet: the fixed step
    gate.bulk_took(50, 0.0125)  # 250 µs a record: 200 records in 50 ms
    assert await gate.bulk_turn(1000) == 200
    assert await gate.bulk_turn(120) == 120  # never more than what is left
    for _ in range(30):  # the machine got slow: 5 ms a record
        gate.bulk_took(200, 1.0)
    assert await gate.bulk_turn(1000) == 10  # the floor
    gate.bulk_took(0, 1.0)  # an empty step tells nothing
    assert gate.current_step == 10


async def test_the_average_moves_a_third_of_the_way_to_each_new_transaction() -> None:
    gate = UrgentFirst(step=50, quiet=60, step_seconds=0.1, min_step=1)
    gate.bulk_took(100, 0.1)  # 1 ms a record: 100 records
    assert gate.current_step == 100
    gate.bulk_took(100, 0.4)  # 4 ms: the average becomes 1 + 0.3 * 3 = 1.9 ms
    assert gate.current_step == int(0.1 / 0.0019)
    assert await gate.bulk_turn(1000) == 1000  # no urgent work seen: whole batches


async def test_step_seconds_zero_keeps_the_fixed_step() -> None:
    gate = UrgentFirst(step=50, quiet=60, step_seconds=0)
    gate.urgent_seen()
    gate.bulk_took(50, 0.0001)
    assert await gate.bulk_turn(1000) == 50


def test_a_scan_waits_for_the_actions_published_before_it_not_for_later_ones() -> None:
    pending = PendingActions(max_wait=5, rearm=1)
    # partition 0: handled up to offset 10 of 12; partition 1: caught up.
    assert pending.waiting({0: (10, 12), 1: (7, 7)}, {0, 1}, now=0.0) == {0}
    # New actions arrive (high-water 20) while the first two are handled: the target stays
    # the high-water seen when the wait began, so steady traffic cannot hold the scan.
    assert pending.waiting({0: (12, 20), 1: (7, 7)}, {0, 1}, now=0.1) == set()
    # Caught up: no new wait for `rearm` seconds, then the next one sets a new target.
    assert pending.waiting({0: (15, 20)}, {0}, now=0.5) == set()
    assert pending.waiting({0: (15, 20)}, {0}, now=1.2) == {0}


def test_an_unknown_high_water_waits_until_known_or_at_most_max_wait() -> None:
    pending = PendingActions(max_wait=5, rearm=1)
    assert pending.waiting({0: (0, None)}, {0}, now=0.0) == {0}
    assert pending.waiting({0: (0, None)}, {0}, now=4.9) == {0}
    assert pending.waiting({0: (0, None)}, {0}, now=5.0) == set()  # never held for good
    assert pending.waiting({}, {0}, now=6.0) == set()  # still unknown: scanned from now on
    assert pending.waiting({0: (3, 3)}, {0}, now=6.1) == set()  # caught up at last
    assert pending.waiting({0: (3, 5)}, {0}, now=7.2) == {0}  # and may wait again


def test_a_partition_behind_is_scanned_after_max_wait_and_revoked_ones_are_forgotten() -> None:
    pending = PendingActions(max_wait=5, rearm=1)
    assert pending.waiting({0: (0, 100), 1: (0, 100)}, {0, 1}, now=0.0) == {0, 1}
    assert pending.waiting({0: (50, 100)}, {0}, now=2.0) == {0}  # partition 1 revoked
    assert pending.waiting({0: (60, 100)}, {0}, now=5.0) == set()
    assert pending.waiting({0: (70, 120)}, {0}, now=5.1) == set()  # stuck: not held again
    assert pending.waiting({1: (0, 100)}, {1}, now=5.5) == {1}  # assigned again: a new wait
