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
