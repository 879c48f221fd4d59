"""The audit stage reads a /status once more, with longer timeouts, where the first read
timed out: every node has just answered, so a slow answer is a loaded machine (at 64 nodes
on 2 cores one node in 64 took over 2 s), not a safety finding."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from harness.client import NodeStatus, TestnetStatus
from harness.model import Testnet
from harness.model.testnet import build_testnet
from harness.model.topology import load_topology
from harness.run import audit
from node.contract import Status


@dataclass
class SlowToAnswer:
    """What the audit stage asks of a running testnet (snapshot), with the named nodes'
    reads timing out their given number of times first."""

    testnet: Testnet
    slow_reads: dict[str, int]
    asked: list[tuple[float, tuple[str, ...]]] = field(default_factory=list)

    def snapshot(
        self, timeout_s: float = 2.0, only: Collection[str] | None = None
    ) -> TestnetStatus:
        nodes = [n for n in self.testnet.nodes if only is None or n.name in only]
        self.asked.append((timeout_s, tuple(n.name for n in nodes)))
        rows = []
        for n in nodes:
            if self.slow_reads.get(n.name, 0) > 0:
                self.slow_reads[n.name] -= 1
                rows.append(NodeStatus(n, error="timeout"))
            else:
                rows.append(NodeStatus(n, Status(name=n.name, peer_id=n.peer_id)))
        return TestnetStatus(self.testnet.name, rows)


def sentry() -> Testnet:
    return build_testnet(load_topology(Path(__file__).parents[2] / "scenarios" / "sentry.yaml"))


def test_a_slow_read_is_asked_again_with_longer_timeouts_and_only_that_node() -> None:
    running = SlowToAnswer(sentry(), {"node2": 2})
    snap = audit._patient_snapshot(running)  # type: ignore[arg-type]
    assert [ns.name for ns in snap.nodes if ns.down] == []
    assert running.asked[1:] == [(5.0, ("node2",)), (15.0, ("node2",))]
    assert [ns.name for ns in snap.nodes] == [n.name for n in running.testnet.nodes]


def test_a_node_that_never_answers_stays_a_finding() -> None:
    running = SlowToAnswer(sentry(), {"node2": 9})
    snap = audit._patient_snapshot(running)  # type: ignore[arg-type]
    assert [ns.name for ns in snap.nodes if ns.down] == ["node2"]
    found = audit.control_path_violations(running.testnet, snap)
    assert "node2: /status unreadable (timeout)" in found
