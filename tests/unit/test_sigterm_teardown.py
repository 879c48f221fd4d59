"""SIGTERM to a pytest run (a CI timeout) still runs fixture teardowns: the sentrynet
plugin turns it into a KeyboardInterrupt, so testnets and namespaces are not leaked
(issue 16). A real pytest process, a real signal; the fixture writes a file on teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TEST = """
import time
from pathlib import Path
import pytest

@pytest.fixture
def owned():
    Path(r"{ready}").write_text("up")
    yield
    Path(r"{torn}").write_text("down")

def test_long(owned):
    time.sleep(60)
"""


def test_sigterm_runs_fixture_teardown(tmp_path: Path) -> None:
    ready, torn = tmp_path / "ready", tmp_path / "torn"
    (tmp_path / "test_victim.py").write_text(TEST.format(ready=ready, torn=torn))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_victim.py"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    deadline = time.monotonic() + 30
    while not ready.exists():  # a condition, with a deadline: the fixture is up
        assert time.monotonic() < deadline and proc.poll() is None, "the victim never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert torn.exists(), out.decode()
    assert proc.returncode != 0


def _recording_sigterm() -> tuple[list[int], object]:
    got: list[int] = []
    return got, signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))


def test_a_sigterm_during_teardown_waits_for_it_then_arrives() -> None:
    """A teardown no interrupt started (a start torn down to pick subnets again) must not
    swallow the SIGTERM that arrives meanwhile: the run would go on and be killed later."""
    from harness.run import cleanup

    cleanup._terminating.clear()  # a Terminated raised by an earlier test in this process
    got, previous = _recording_sigterm()
    try:
        with cleanup.uninterruptible():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0)  # the interpreter runs pending handlers here: ours holds it
            assert got == [], "the tear-down was interrupted"
        assert got == [signal.SIGTERM], "the SIGTERM was dropped"
    finally:
        signal.signal(signal.SIGTERM, previous)  # type: ignore[arg-type]


def test_a_second_signal_during_an_interrupts_teardown_is_not_raised_again() -> None:
    from harness.run.cleanup import uninterruptible

    got, previous = _recording_sigterm()
    try:
        try:
            raise KeyboardInterrupt("the first Ctrl-C")
        except KeyboardInterrupt:
            with uninterruptible():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0)
        assert got == []
    finally:
        signal.signal(signal.SIGTERM, previous)  # type: ignore[arg-type]


SLOW_TEARDOWN = """
import time
from pathlib import Path
import pytest
from harness.run.cleanup import uninterruptible

@pytest.fixture
def owned():
    Path(r"{ready}").write_text("up")
    yield
    with uninterruptible():  # as every testnet's removal is
        time.sleep({teardown_s})  # the removal itself, on a loaded machine: its length
    Path(r"{torn}").write_text("down")

def test_long(owned):
    time.sleep(120)
"""


def test_an_xdist_worker_finishes_a_teardown_longer_than_execnets_15_s(tmp_path: Path) -> None:
    """SIGTERM to the controller of `pytest -n 1`: the worker tears down, and execnet, told
    by the controller to end it, neither interrupts nor kills it before it is done (it
    called os._exit 15 s after, harness/pytest_plugin.let_this_worker_finish_tearing_down)."""
    ready, torn = tmp_path / "ready", tmp_path / "torn"
    text = SLOW_TEARDOWN.format(ready=ready, torn=torn, teardown_s=20)
    (tmp_path / "test_victim.py").write_text(text)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "1"]
    proc = subprocess.Popen(
        [*argv, "test_victim.py"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    deadline = time.monotonic() + 60
    while not ready.exists():  # a condition, with a deadline: the worker's fixture is up
        assert time.monotonic() < deadline and proc.poll() is None, "the victim never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert torn.exists(), f"the worker's teardown was cut off:\n{out.decode()[-3000:]}"
    assert proc.returncode != 0
