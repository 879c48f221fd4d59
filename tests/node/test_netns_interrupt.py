"""SIGTERM to a process holding a netns lab, at two points (while the lab is being built,
and with its nodes running): the process exits and leaves nothing behind (namespaces,
the root-side control veths, the marker, node processes). Without the lab's SIGTERM
handling the default action ended the process with the namespaces still there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from netns import MARKERS, netns_available

from testkit.procs import REPO

pytestmark = pytest.mark.netns

# The lab's owner: builds a lab, says how far it got on stdout, and waits for the signal
# (the interrupt is the subject here, so it blocks in signal.pause, not on a condition).
CHILD = textwrap.dedent(
    """
    import signal, sys
    sys.path.insert(0, {tests_node!r})
    from netns import NatLab
    lab = NatLab()
    print("ID", lab.id, flush=True)
    relay = lab.start_node(lab.add_public_host("relay"), p2p={{"discovery": False}},
                           relay={{"enabled": True, "mode": "server"}})
    r1 = lab.add_router("r1")
    client = {{"enabled": True, "mode": "client", "relay_servers": [relay.full_addr]}}
    lab.start_node(lab.add_private_host("c", r1), p2p={{"discovery": False}}, relay=client)
    print("UP", flush=True)
    while True:
        signal.pause()
    """
)


def _leftovers(lab_id: str) -> list[str]:
    prefix = f"sn{lab_id}"
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left = [f"namespace {ln.split()[0]}" for ln in out.splitlines() if ln.startswith(prefix)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    left += [f"link {ln.split(':')[1].strip()}" for ln in links.splitlines() if f" {prefix}c" in ln]
    if (MARKERS / lab_id).exists():
        left.append(f"marker {MARKERS / lab_id}")
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    left += [f"process {ln.strip()}" for ln in ps.splitlines() if f"/tmp/{prefix}" in ln]
    return left


@pytest.mark.parametrize("point", ["building", "running"])
def test_sigterm_removes_the_lab(point: str, tmp_path: Path) -> None:
    reason = netns_available()
    if reason is not None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{reason} (CI=true: netns tests must run)")
        pytest.skip(reason)
    script = tmp_path / "owner.py"
    script.write_text(CHILD.format(tests_node=str(REPO / "tests" / "node")))
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lab_id = ""
    seen: list[str] = []
    deadline = time.monotonic() + 90
    try:
        for line in proc.stdout:
            seen.append(line.rstrip())
            if line.startswith("ID "):
                lab_id = line.split()[1]
                if point == "building":
                    break
            if line.startswith("UP"):
                break
            assert time.monotonic() < deadline, f"the lab did not come up: {seen[-20:]}"
        assert lab_id, f"the child never built a lab: {seen[-20:]}"
        assert _leftovers(lab_id), "the lab should exist before the signal"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    tail = "\n".join(seen[-10:] + out.splitlines()[-10:])
    assert _leftovers(lab_id) == [], tail
    assert proc.returncode != 0, tail
    assert "Terminated" in out, tail  # unwound by the lab's handler, not killed outright
