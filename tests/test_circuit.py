"""The circuit breaker, on an injected clock."""

from __future__ import annotations

from voicecache.circuit import CircuitBreaker


def test_opens_after_consecutive_failures_and_probes_once_after_cooldown() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=3, cooldown=10, clock=lambda: now[0])
    breaker.failure()
    breaker.success()  # not consecutive: the count starts again
    breaker.failure()
    breaker.failure()
    assert breaker.allow() and breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow() and breaker.opened == 1

    now[0] = 10.0
    assert breaker.state == "half-open"
    assert breaker.allow()  # the probe …
    assert not breaker.allow()  # … and only the probe
    breaker.failure()  # a failed probe opens it for another cooldown
    assert breaker.state == "open" and breaker.opened == 2
    now[0] = 15.0
    assert not breaker.allow()
    now[0] = 20.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


def test_a_cancelled_probe_lets_the_next_caller_probe() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=1, cooldown=1, clock=lambda: now[0])
    breaker.failure()
    now[0] = 1.0
    assert breaker.allow()
    breaker.release_probe()
    assert breaker.allow()
