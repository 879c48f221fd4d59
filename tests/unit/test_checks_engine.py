"""The scenario engine (harness/run/steps.py) with a scripted observer: outcomes, seconds
from `up`, dependent deadlines, a failed action blocking the rest, and the Observer's
event history across a node restart (against the node's real HTTP API on loopback)."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
from test_checks_data import PID, healthy_statuses, nodes, obs

from harness import scenarios
from harness.checks import Observation, Verdict
from harness.client import NodeClient
from harness.progress import Progress
from harness.run import steps as engine
from harness.run.steps import (
    ActionStep,
    CheckStep,
    Observer,
    RunContext,
    Scenario,
    WaitStep,
    pending_outcomes,
    run_steps,
)


class ScriptedObserver(Observer):
    """Returns a fixed observation whose `t` is the real time since construction."""

    def __init__(self) -> None:
        super().__init__(nodes(), {})
        self.polls = 0

    def observe(self) -> Observation:
        self.polls += 1
        o = obs(marks=self.marks, t=self.now())
        self.last = o
        return o


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "POLL_INTERVAL_S", 0.01)
    monkeypatch.setattr(engine, "DEPENDENT_DEADLINE_S", 0.05)


def ctx() -> tuple[RunContext, io.StringIO]:
    out = io.StringIO()
    return RunContext(ScriptedObserver(), Progress(stream=out)), out


def after(seconds: float) -> Any:
    """A check that holds once `seconds` passed since up, claiming it held at 0.01."""

    def check(o: Observation) -> Verdict:
        if o.t >= seconds:
            return Verdict(True, f"held at {o.t:.2f}", since=0.01)
        return Verdict(False, f"only {o.t:.2f}", cause="too early")

    return check


def never(o: Observation) -> Verdict:
    return Verdict(False, "not yet", cause="never happens")


def test_outcomes_seconds_and_detail() -> None:
    c, out = ctx()
    sc = Scenario(
        "t",
        "sentry",
        "",
        [
            CheckStep("first", after(0.05), 5),
            CheckStep("second", never, 0.1),
            CheckStep("third", never, 10, requires=("second",)),
        ],
    )
    t0 = time.monotonic()
    res = run_steps(sc, c)
    assert time.monotonic() - t0 < 3  # the dependent check got the short deadline
    assert [(o.name, o.passed) for o in res] == [
        ("first", True),
        ("second", False),
        ("third", False),
    ]
    assert res[0].seconds == 0.01  # the nodes' own timestamp, not the poll that saw it
    assert res[1].cause == "never happens" and res[1].detail == "not yet"
    assert res[2].detail.startswith("(after failed second)")
    text = out.getvalue()
    assert "check first: PASS" in text and "check second: FAIL" in text


def test_failed_action_blocks_the_rest_but_every_check_is_reported() -> None:
    c, _ = ctx()

    def boom(_: RunContext) -> str:
        raise RuntimeError("container gone")

    sc = Scenario(
        "t",
        "sentry",
        "",
        [
            CheckStep("a", after(0), 1),
            ActionStep("kill node3", boom),
            WaitStep("skipped wait", never, 100),
            CheckStep("b", after(0), 1),
        ],
    )
    res = run_steps(sc, c)
    assert [o.passed for o in res] == [True, False]
    assert "not reached: step 'kill node3' failed: container gone" in res[1].detail


def test_wait_timeout_blocks_later_checks_except_always() -> None:
    c, _ = ctx()
    sc = Scenario(
        "t",
        "sentry",
        "",
        [
            WaitStep("blocks", never, 0.05),
            CheckStep("x", after(0), 1),
            CheckStep("forks", after(0), 1, always=True),
        ],
    )
    res = run_steps(sc, c)
    assert [o.name for o in res] == ["x", "forks"]
    assert not res[0].passed and res[0].detail.startswith("not reached: 'blocks' did not happen")
    assert res[1].passed  # evaluated anyway


def test_deadline_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTRYNET_DEADLINE_SCALE", "3")
    assert engine.deadline_scale() == 3.0
    monkeypatch.setenv("SENTRYNET_DEADLINE_SCALE", "0.1")
    assert engine.deadline_scale() == 1.0
    monkeypatch.setenv("SENTRYNET_DEADLINE_SCALE", "x")
    assert engine.deadline_scale() == 1.0


def test_final_verdict_stops_polling_early() -> None:
    c, _ = ctx()

    def final(o: Observation) -> Verdict:
        return Verdict(False, "it happened", cause="leak", data={"final": True})

    t0 = time.monotonic()
    res = run_steps(Scenario("t", "s", "", [CheckStep("neg", final, 30)]), c)
    assert time.monotonic() - t0 < 2 and not res[0].passed


def test_pending_outcomes_lists_every_check() -> None:
    sc = scenarios.get("sentry")
    rows = pending_outcomes(sc, [], "interrupted")
    assert [r.name for r in rows] == [
        "reservations",
        "relayed_circuit",
        "dcutr_upgrade",
        "consensus",
        "cross_network_sync",
        "no_forks",
    ]
    assert all(not r.passed and r.detail == "not run: interrupted" for r in rows)


def test_every_scenario_is_defined_with_its_checks() -> None:
    names = {n: scenarios.get(n).check_names for n in scenarios.SCENARIOS}
    assert set(names) == {
        "sentry",
        "mixed-relay",
        "nat-rebind",
        "cgnat",
        "latency-wan",
        "seed-rust",
        "seed-exact",
        "symmetric-nat",
        "relay-failover",
        "partition-heal",
        "client-restart-loop",
        "relay-limits",
        "shared-port",
        "reservation-refresh",
        "advertised-addrs",
        "port-forward-sentry",
        "hairpin",
        "quic-cone",
    }
    assert "dcutr_fails" in names["symmetric-nat"]
    assert "dcutr_quic" in names["quic-cone"]
    assert {"back_at_configured_address", "consensus_after"} <= set(names["port-forward-sentry"])
    assert {"hairpin", "forward_from_outside"} <= set(names["hairpin"])
    assert names["mixed-relay"] == names["sentry"]
    assert {"failover", "reservations_restored"} <= set(names["relay-failover"])
    assert {"converged", "no_forks"} <= set(names["partition-heal"])
    assert {"reservations_recovered", "circuit_dial_ok"} <= set(names["nat-rebind"])
    seed = scenarios.get("seed-exact")
    expects = {s.name: s.expect for s in seed.steps if isinstance(s, CheckStep)}
    assert expects["relayed_circuit"] == "impossible"
    assert expects["cross_network_sync"] == "impossible"


def test_seed_exact_reach_marks_from_the_model() -> None:
    from harness.model.topology import load_topology

    topo = load_topology(scenarios_dir() / "seed-exact.yaml")
    c, _ = ctx()
    c.extra["topology"] = topo
    said = scenarios.analyse_reach("node4")(c)
    reach = c.marks["reach"]
    assert reach["relayed_circuit"] and "no relay both can use" in reach["relayed_circuit"]
    assert reach["cross_network_sync"]
    assert "impossible" in said
    topo = load_topology(scenarios_dir() / "sentry.yaml")
    c.extra["topology"] = topo
    scenarios.analyse_reach("node4")(c)
    assert c.marks["reach"]["relayed_circuit"] is None  # possible behind cone NAT


def scenarios_dir() -> Any:
    from harness.run.setup import SCENARIO_DIR

    return SCENARIO_DIR


# --------------------------------------------------------------------------- Observer


def test_observer_keeps_history_across_a_restart() -> None:
    """Real node API (node/api.py) on loopback: events before and after a restart are
    both kept, the second process's under epoch 1, with times in harness seconds."""
    from node.api import APIServer
    from node.events import EventLog
    from node.metrics import Metrics

    def serve(started_at: float, log: EventLog) -> APIServer:
        t_start = time.monotonic()
        st = healthy_statuses()["node4"]

        def status() -> dict[str, Any]:
            return {**st, "started_at": started_at, "uptime_s": time.monotonic() - t_start}

        api = APIServer(("127.0.0.1", 0), status, log, Metrics())
        api.start()
        return api

    t_up = time.monotonic()
    log1 = EventLog("node4", stream=io.StringIO())
    log1.emit("block_committed", height=1, hash="h1", proposer=PID["node0"])
    api = serve(time.monotonic(), log1)
    host, port = api.address
    ob = Observer(nodes(), {"node4": NodeClient(f"http://{host}:{port}")}, t_up=t_up)
    try:
        o = ob.observe()
        assert [e.height for e in o.events["node4"]] == [1]
        log1.emit("block_committed", height=2, hash="h2", proposer=PID["node0"])
        o = ob.observe()
        assert [e.height for e in o.events["node4"]] == [1, 2]
    finally:
        api.stop()
    o = ob.observe()
    assert "node4" not in o.status and "node4" in o.unreachable
    log2 = EventLog("node4", stream=io.StringIO())
    log2.emit("sync_completed", from_height=1, to_height=5, peers=[])
    api = serve(time.monotonic() - 0.5, log2)  # another started_at: a restart
    ob.clients["node4"].api_url = f"http://{api.address[0]}:{api.address[1]}"
    try:
        o = ob.observe()
    finally:
        api.stop()
    evs = o.events["node4"]
    assert [(e.type, e.epoch) for e in evs] == [
        ("block_committed", 0),
        ("block_committed", 0),
        ("sync_completed", 1),
    ]
    assert all(e.ts is not None and 0 <= e.ts <= ob.now() + 0.5 for e in evs), (
        [e.ts for e in evs],
        ob.now(),
    )


def test_observer_with_no_nodes_is_harmless() -> None:
    assert Observer(nodes(), {}).observe().status == {}


# --------------------------------------------------------------------------- run plumbing


def test_free_subnet_overrides_only_move_taken_networks() -> None:
    import ipaddress

    from harness.model.topology import load_topology
    from harness.run.setup import free_subnet_overrides, topology_path

    topo = load_topology(topology_path("sentry"))
    assert free_subnet_overrides(topo, []) == {}
    taken = [ipaddress.ip_network("172.20.0.0/16"), ipaddress.ip_network("10.0.0.0/24")]
    moved = free_subnet_overrides(topo, taken)
    assert set(moved) == {"a", "public"}
    new = [ipaddress.ip_network(v) for v in moved.values()]
    assert all(n.prefixlen == 24 for n in new)
    assert not any(n.overlaps(t) for n in new for t in taken)
    assert not new[0].overlaps(new[1])
    assert not any(n.overlaps(ipaddress.ip_network("172.21.0.0/24")) for n in new)


def test_a_control_subnet_another_testnet_holds_is_moved() -> None:
    """Two testnets up at once whose names hash alike got one control subnet (CI: partition-
    heal-f8ca and shared-port-77a5 both 10.250.106.0/24); picking again gave the same name
    the same one. Now a taken one is moved, and the model builds on the moved one."""
    import ipaddress

    from harness.model import build_testnet, load_topology
    from harness.model.testnet import control_subnet_for
    from harness.run.setup import free_control_subnet, topology_path

    topo = load_topology(topology_path("sentry"))  # partition-heal runs the sentry topology
    data = [ipaddress.ip_network(n.subnet) for n in topo.networks]
    own = control_subnet_for("partition-heal-f8ca", data)
    assert own == control_subnet_for("shared-port-77a5", data) == "10.250.106.0/24"
    assert free_control_subnet("partition-heal-f8ca", topo, {}, []) is None
    taken = [ipaddress.ip_network("10.250.106.0/24")]
    moved = free_control_subnet("partition-heal-f8ca", topo, {}, taken)
    assert moved is not None and not ipaddress.ip_network(moved).overlaps(taken[0])
    tn = build_testnet(topo, "partition-heal-f8ca", subnet_overrides={"control": moved})
    assert tn.control.subnet == moved


def test_observation_reads_the_resolved_testnet() -> None:
    from harness.model import build_testnet, load_topology
    from harness.run.setup import topology_path

    tn = build_testnet(load_topology(topology_path("sentry")), "unit-sentry")
    infos = {n.name: n for n in tn.nodes}
    nets = {n.name: n for n in tn.networks}
    assert infos["node3"].networks == ("a", "public") and not infos["node3"].serve_sync
    assert infos["node0"].relay_client and infos["node0"].validator
    assert not infos["node3"].relay_client  # sentries (mode both) are not counted as clients
    assert nets["b"].private and nets["b"].router_public_ip
    assert not nets["public"].private
    o = Observation(t=0, nodes=infos, nets=nets)
    assert o.only_private("node0") and not o.only_private("node3")
    assert o.cross_pairs(o.validators()) == [
        ("node0", "node4"),
        ("node0", "node5"),
        ("node1", "node4"),
        ("node1", "node5"),
    ]


def test_topology_path_errors_name_the_known_ones() -> None:
    from harness.errors import SentrynetError
    from harness.run.setup import topology_path

    with pytest.raises(SentrynetError, match=r"known: .*sentry"):
        topology_path("nope")


def test_perturbations_find_hosts_in_the_model() -> None:
    from harness.model.testnet import build_testnet
    from harness.model.topology import load_topology
    from harness.run.setup import topology_path

    tn = build_testnet(load_topology(topology_path("sentry")), "unit-sentry")
    assert tn.public_network.name == "public"
    assert {h.name for h in tn.hosts_on("a")} >= {"node0", "node3", "router-a"}
