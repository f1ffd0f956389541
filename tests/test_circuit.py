"""The one circuit breaker (tiers, rate counters and engines share it), on an injected clock:
every transition, the single half-open probe, and the counters metrics read."""

from __future__ import annotations

import asyncio

import pytest

from voicecache.circuit import STATES, CircuitBreaker


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def opened_breaker(clock: Clock, failures: int = 2, cooldown: float = 10.0) -> CircuitBreaker:
    breaker = CircuitBreaker(failures=failures, cooldown=cooldown, clock=clock)
    for _ in range(failures):
        breaker.failure()
    assert breaker.opened == 1
    return breaker


def test_states_have_one_spelling() -> None:
    assert STATES == ("closed", "open", "half_open")
    assert set(CircuitBreaker().transitions) == set(STATES)


def test_closed_counts_only_consecutive_failures() -> None:
    breaker = CircuitBreaker(failures=3, cooldown=10, clock=Clock())
    breaker.failure()
    breaker.failure()
    breaker.success()  # not consecutive: the count starts again
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed" and breaker.allow() and breaker.consecutive_failures == 2
    assert breaker.opened == 0 and breaker.remaining_cooldown() == 0.0


def test_closed_to_open_after_the_threshold() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown=10, clock=clock)
    for _ in range(3):
        breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.opened == 1
    assert breaker.transitions == {"closed": 0, "open": 1, "half_open": 0}
    assert breaker.remaining_cooldown() == 10.0
    clock.now += 4
    assert breaker.remaining_cooldown() == 6.0 and not breaker.allow()


def test_a_late_failure_while_open_neither_extends_nor_reopens() -> None:
    clock = Clock()
    breaker = opened_breaker(clock)
    clock.now += 6
    breaker.failure()  # a call that started before the circuit opened
    assert breaker.remaining_cooldown() == 4.0 and breaker.opened == 1
    clock.now += 4
    assert breaker.state == "half_open"


def test_open_to_half_open_when_the_cooldown_has_passed() -> None:
    clock = Clock()
    breaker = opened_breaker(clock)
    clock.now += 9.99
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 0.01
    assert breaker.state == "half_open" and breaker.remaining_cooldown() == 0.0
    # half_open is counted when the probe is let through, not when the time is read
    assert breaker.transitions["half_open"] == 0 and not breaker.probing


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = Clock()
    breaker = opened_breaker(clock)
    clock.now += 10
    assert breaker.allow()  # the probe …
    assert breaker.probing and breaker.state == "half_open"
    assert not breaker.allow() and not breaker.allow()  # … and only the probe
    assert breaker.transitions["half_open"] == 1


def test_half_open_to_open_when_the_probe_fails() -> None:
    clock = Clock()
    breaker = opened_breaker(clock)
    clock.now += 10
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and not breaker.probing and breaker.opened == 2
    assert breaker.remaining_cooldown() == 10.0  # another full cooldown from now
    clock.now += 10
    assert breaker.allow()  # a new probe
    assert breaker.transitions == {"closed": 0, "open": 2, "half_open": 2}


def test_half_open_to_closed_when_the_probe_succeeds() -> None:
    clock = Clock()
    breaker = opened_breaker(clock)
    clock.now += 10
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and not breaker.probing
    assert breaker.allow() and breaker.allow() and breaker.consecutive_failures == 0
    assert breaker.transitions == {"closed": 1, "open": 1, "half_open": 1}
    breaker.failure()  # the count starts from zero again
    assert breaker.state == "closed"


def test_a_released_probe_lets_the_next_caller_probe() -> None:
    clock = Clock()
    breaker = opened_breaker(clock)
    clock.now += 10
    assert breaker.allow()
    breaker.release_probe()  # cancelled: no verdict on the backend
    assert breaker.state == "half_open" and not breaker.probing
    assert breaker.allow() and not breaker.allow()
    # still the same half-open period: counted once
    assert breaker.transitions["half_open"] == 1 and breaker.opened == 1


def test_a_late_failure_in_half_open_leaves_the_probe_slot_alone() -> None:
    clock = Clock()
    breaker = opened_breaker(clock)
    clock.now += 10
    breaker.failure()  # from before the circuit opened: no probe has gone yet
    assert breaker.state == "half_open" and breaker.opened == 1
    assert breaker.allow()


def test_a_late_success_closes_an_open_circuit() -> None:
    clock = Clock()
    breaker = opened_breaker(clock)
    breaker.success()  # the backend answered after all: it works
    assert breaker.state == "closed" and breaker.allow()
    assert breaker.transitions == {"closed": 1, "open": 1, "half_open": 0}


def test_success_while_closed_is_no_transition() -> None:
    breaker = CircuitBreaker(clock=Clock())
    breaker.success()
    assert breaker.transitions == {"closed": 0, "open": 0, "half_open": 0}


def test_zero_cooldown_probes_at_once() -> None:
    clock = Clock()
    breaker = opened_breaker(clock, failures=1, cooldown=0)
    assert breaker.state == "half_open" and breaker.allow() and not breaker.allow()


@pytest.mark.parametrize(("failures", "cooldown"), [(0, 1.0), (-1, 1.0), (1, -0.5)])
def test_bad_limits_are_refused(failures: int, cooldown: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failures=failures, cooldown=cooldown)


async def _returns() -> str:
    return "ok"


async def _raises(exc: Exception) -> str:
    raise exc


async def test_run_gives_each_outcome_its_verdict() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown=10, clock=clock)
    failures = (OSError, KeyError)

    def answer(exc: Exception) -> bool:
        return isinstance(exc, KeyError)  # e.g. "no such object": the backend answered

    with pytest.raises(KeyError):
        await breaker.run(lambda: _raises(KeyError("gone")), failures, answer)
    assert breaker.state == "closed"
    with pytest.raises(ValueError):  # not one of `failures`: no verdict
        await breaker.run(lambda: _raises(ValueError("bug")), failures, answer)
    assert breaker.state == "closed" and breaker.consecutive_failures == 0
    with pytest.raises(OSError):
        await breaker.run(lambda: _raises(OSError("down")), failures, answer)
    assert breaker.state == "open"
    clock.now += 10
    assert breaker.allow()  # the probe
    assert await breaker.run(_returns, failures) == "ok"
    assert breaker.state == "closed"


async def test_run_cancelled_probe_frees_the_probe_slot() -> None:
    clock = Clock()
    breaker = opened_breaker(clock)
    clock.now += 10
    assert breaker.allow()
    assert not breaker.allow()  # the probe is in flight

    async def cancelled() -> str:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await breaker.run(cancelled, (OSError,))
    assert breaker.state == "half_open"
    assert breaker.allow()  # no verdict, and the next caller may probe
