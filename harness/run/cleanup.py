"""Cleanup: removing a testnet by its label, and the signal handling that makes sure we do.

`down` removes by the `sentrynet.testnet` label through the Docker SDK, not through compose,
so it works without the rendered directory, after partial failures, and never touches
another testnet. SIGTERM (CI timeout, `kill`) is handled like Ctrl-C, once, here: every run
(`sentrynet up`, a scenario, a bench) tears down what it started, and a second Ctrl-C
during tear-down is ignored, because it would leave half a testnet behind.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

from docker.errors import DockerException

from harness.infra import docker, swarm
from harness.progress import Progress
from harness.wait import wait_until


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled like Ctrl-C (tear down, then exit)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        _terminating.set()  # this process is ending: later signals add nothing


_terminating = threading.Event()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside: SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def uninterruptible() -> Iterator[None]:
    """Tear-down must finish: Ctrl-C and SIGTERM wait until it has.

    A signal that arrives inside is held, not dropped: on the way out it is raised again
    through the handler in force before, unless the process is already ending for an
    interrupt (a SIGTERM raised Terminated, or the block unwinds from a Ctrl-C: a second
    signal changes nothing, and would cut the rest of the teardown short). Dropping it lost
    a CI job's SIGTERM whenever it came during a tear-down that an interrupt had not
    started (a start torn down to pick free subnets again, a scenario's testnet removed
    before the next one): the run went on and was killed later, mid-start.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)

    prev_int = signal.signal(signal.SIGINT, hold)
    prev_term = signal.signal(signal.SIGTERM, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, prev_int)
        signal.signal(signal.SIGTERM, prev_term)
        if held and not _unwinding_from_an_interrupt():
            signal.raise_signal(held[0])


def _unwinding_from_an_interrupt() -> bool:
    return _terminating.is_set() or isinstance(sys.exc_info()[1], KeyboardInterrupt)


def down(name: str) -> docker.Removed:
    """Remove everything labelled sentrynet.testnet=<name>; idempotent. A single-node swarm
    sentrynet initialised for it (`--engine swarm`) is left once no testnet uses it."""
    removed = docker.remove_testnet(name)
    left = swarm.release_if_unused(except_testnet=name)
    if left:
        removed.notes.append(left)
    return removed


def down_settled(name: str, deadline_s: float = 60.0) -> docker.Removed:
    """`down` until nothing labelled reappears for a few polls in a row.

    After an interrupted `compose up` the daemon may still finish creating a container the
    killed client asked for; a single pass could miss it.
    """
    total = down(name)
    empty_polls = [0]

    def probe() -> tuple[bool, str]:
        again = down(name)
        total.containers += again.containers
        total.networks += again.networks
        total.volumes += again.volumes
        total.notes += again.notes
        empty_polls[0] = empty_polls[0] + 1 if again.nothing else 0
        try:
            left = [c.name for c in docker.containers(name)]
        except DockerException as exc:  # another host of the testnet does not answer
            total.errors.append(f"another host of {name}: {exc}")
            return True, "another host does not answer: its containers are left"
        left += [n.name for n in docker.networks(name)]
        return empty_polls[0] >= 3 and not left, f"still present: {left or 'nothing'}"

    wait_until(
        probe,
        what=f"nothing labelled sentrynet.testnet={name} to remain",
        deadline_s=deadline_s,
        likely_cause="the Docker daemon keeps (re)creating objects for this testnet; "
        "is another `compose up` for it still running?",
        interval_s=0.5,
    )
    return total


def teardown(name: str, progress: Progress, reason: str, settled: bool = True) -> str:
    """Remove testnet `name` without being interrupted; say why and what went."""
    with uninterruptible():
        progress.say(f"{reason}: removing testnet {name}")
        removed = down_settled(name) if settled else down(name)
        said = describe_removed(name, removed)
        progress.say(said)
    return said


def describe_removed(name: str, removed: docker.Removed) -> str:
    if removed.nothing and not removed.errors and not removed.notes:
        return f"testnet {name}: nothing to remove"
    parts = [
        f"{len(removed.containers)} container(s)",
        f"{len(removed.networks)} network(s)",
        f"{len(removed.volumes)} volume(s)",
    ]
    text = f"testnet {name}: removed {', '.join(parts)}"
    if removed.notes:
        text += "; " + "; ".join(removed.notes)
    if removed.errors:
        text += "\n  could not remove:\n" + "\n".join(f"    {e}" for e in removed.errors)
    return text
