"""The acknowledgement invariants: never past an undelivered change, never backwards."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wal2http.delivery.ack import AckTracker


def test_confirms_only_delivered_commit_ends() -> None:
    ack = AckTracker(100)
    assert ack.confirmed_lsn == 100
    assert ack.delivered(200)
    assert ack.confirmed_lsn == 200


def test_never_moves_backwards() -> None:
    ack = AckTracker(500)
    assert not ack.delivered(300)
    assert not ack.idle(400)
    assert ack.confirmed_lsn == 500


def test_idle_advances_to_wal_end() -> None:
    ack = AckTracker(100)
    assert ack.idle(900)
    assert ack.confirmed_lsn == 900


def test_resent_transactions_are_skipped_and_counted() -> None:
    ack = AckTracker(0)
    ack.delivered(1000)
    assert ack.already_delivered(900)  # commit record started before the delivered end
    assert not ack.already_delivered(1000)
    assert ack.duplicate_transactions == 1


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 2**40)), max_size=50))
def test_confirmed_is_monotonic_and_the_maximum_seen(steps: list[tuple[bool, int]]) -> None:
    ack = AckTracker(0)
    previous = 0
    for is_delivery, lsn in steps:
        if is_delivery:
            ack.delivered(lsn)
        else:
            ack.idle(lsn)
        assert ack.confirmed_lsn >= previous
        previous = ack.confirmed_lsn
    assert ack.confirmed_lsn == max([0] + [lsn for _, lsn in steps])


def test_partial_transaction_resumes_after_the_last_delivered_event() -> None:
    ack = AckTracker(0)
    ack.events_delivered(5000, 120)
    assert ack.partial_seq(5000) == 120
    assert ack.partial_seq(6000) == 0
