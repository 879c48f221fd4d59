"""The one wait primitive of the harness: poll a condition until a deadline, never sleep blindly.

Every wait in sentrynet (nodes ready, a reservation accepted, a hole punch, a height reached)
goes through `wait_until`, so every timeout reads the same way: what was waited for, for how
long, the last thing seen and the most likely cause. A bare "timed out" is useless in a CI log.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from harness.errors import SentrynetError

T = TypeVar("T")

Probe = Callable[[], tuple[bool, T]]


class WaitTimeout(SentrynetError):
    """A condition did not hold before its deadline; the message is the whole diagnosis."""

    def __init__(
        self,
        what: str,
        deadline_s: float,
        last_seen: object,
        likely_cause: str,
        polls: int,
        elapsed_s: float,
    ) -> None:
        self.what = what
        self.deadline_s = deadline_s
        self.last_seen = last_seen
        self.likely_cause = likely_cause
        self.polls = polls
        self.elapsed_s = elapsed_s
        super().__init__(
            f"timed out waiting for {what}: deadline {deadline_s:g}s, "
            f"gave up after {elapsed_s:.1f}s and {polls} polls\n"
            f"  last seen:    {last_seen}\n"
            f"  likely cause: {likely_cause}"
        )


class _Outcome(Generic[T]):
    """What the last poll returned; kept outside tenacity so the timeout can report it."""

    def __init__(self) -> None:
        self.done = False
        self.last_seen: T | None = None
        self.polls = 0


def wait_until(
    probe: Probe[T],
    *,
    what: str,
    deadline_s: float,
    likely_cause: str,
    interval_s: float = 0.25,
    on_poll: Callable[[T], None] | None = None,
) -> T:
    """Call `probe()` until it returns `(True, seen)`; return that `seen`.

    `probe` returns `(done, last_seen)`; `last_seen` is whatever best explains the current state
    (a status dict, "connection refused", "3/8 ready"). Exceptions from `probe` propagate: a
    probe that can fail transiently catches its own errors and reports them as `last_seen`.
    `on_poll(last_seen)` runs after every poll (live progress lines).
    Raises `WaitTimeout` when `deadline_s` passes without success.
    """
    if deadline_s <= 0:
        raise ValueError(f"deadline_s must be positive, got {deadline_s}")
    outcome: _Outcome[T] = _Outcome()
    started = time.monotonic()

    def attempt() -> bool:
        done, seen = probe()
        outcome.done, outcome.last_seen = bool(done), seen
        outcome.polls += 1
        if on_poll is not None:
            on_poll(seen)
        return outcome.done

    retrying = Retrying(
        stop=stop_after_delay(deadline_s),
        wait=wait_fixed(interval_s),
        retry=retry_if_result(lambda ok: not ok),
        reraise=True,
    )
    with contextlib.suppress(RetryError):
        retrying(attempt)
    if outcome.done:
        return outcome.last_seen  # type: ignore[return-value]
    raise WaitTimeout(
        what,
        deadline_s,
        outcome.last_seen,
        likely_cause,
        outcome.polls,
        time.monotonic() - started,
    )
