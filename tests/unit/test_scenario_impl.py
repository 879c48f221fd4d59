"""The scenario parameter `impl` (issue 11 item 3): the same scenario file with its
topology's unpinned nodes on another implementation (`sentrynet scenario NAME --impl
rust`), the `impls:` a file declares for `make test`, and the pytest ids they make. No
Docker."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import scenarios
from harness.cli import scenario as cli
from harness.errors import SentrynetError
from harness.model.topology import load_topology, switch_impl
from harness.run import report
from harness.run.steps import CheckOutcome
from harness.scenarios.loader import IMPL_VARIANTS, ScenarioError, parse_scenario

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scenarios"))

STEPS = "steps:\n  - check: reservations\n    deadline: 60\n"


def parse(text: str, impl: str = "python", field: str = "--impl") -> scenarios.Scenario:
    return parse_scenario(text, Path("/x/t.yaml"), source="t.yaml", impl=impl, impl_field=field)


def impls_of(sc: scenarios.Scenario) -> dict[str, str]:
    """node -> impl of the topology file the run renders."""
    return {n.name: n.impl for n in load_topology(sc.topology).nodes}


def test_rust_switches_every_unpinned_node() -> None:
    sc = scenarios.get("relay-limits", "rust")
    assert sc.impl == "rust" and sc.impls == ("python",)
    assert set(sc.node_impls.values()) == {"rust"}
    assert sc.switched == tuple(sc.node_impls)
    # what runs is the written topology file, not the original
    assert impls_of(sc) == sc.node_impls
    # the topology keeps its config (relay limits, DCUtR off)
    topo = load_topology(sc.topology)
    assert topo.node("node3").config["relay"]["circuit_duration_s"] == 5
    assert topo.node("node0").config["dcutr"] == {"enabled": False}
    assert topo.name == "relay-limits"


def test_python_is_the_file_as_written() -> None:
    sc = scenarios.get("relay-limits")
    assert sc.impl == "python" and sc.switched == ()
    assert sc.topology == "relay-limits"
    assert set(sc.node_impls.values()) == {"python"}
    assert sc.run_label == "relay-limits" and sc.variant == "relay-limits[python]"


def test_pinned_nodes_keep_their_impl() -> None:
    # mixed-relay pins both sentries on rust: --impl rust moves only the others, and
    # python leaves them where the file put them
    for impl in ("rust", "python"):
        sc = scenarios.get("mixed-relay", impl)
        assert sc.node_impls["node3"] == sc.node_impls["node7"] == "rust"
        assert "node3" not in sc.switched and "node7" not in sc.switched
    sc = scenarios.get("seed-rust", "python")
    rust = scenarios.get("seed-rust", "rust")
    pinned = {n: i for n, i in sc.node_impls.items() if n not in rust.switched}
    assert pinned == {n: rust.node_impls[n] for n in pinned}
    assert pinned == {"node0": "rust", "node1": "rust", "node4": "rust", "node5": "rust"}


def test_scopes_clients_and_relays() -> None:
    clients = scenarios.get("sentry", "rust:clients")
    assert clients.node_impls["node3"] == clients.node_impls["node7"] == "python"
    assert clients.node_impls["node0"] == "rust" and "node3" not in clients.switched
    relays = scenarios.get("sentry", "rust:relays")
    assert relays.switched == ("node3", "node7")
    assert relays.run_label == "sentry-rust-relays"
    assert clients.variant == "sentry[rust:clients]"


def test_switch_impl_leaves_image_and_impl_pins_alone() -> None:
    raw = {
        "nodes": {
            "a": {"role": "validator"},
            "b": {"role": "validator", "impl": "python"},
            "c": {"role": "full", "image": "x/y:1"},
            "r": {"role": "sentry", "relay_mode": "both"},
        }
    }
    out, switched = switch_impl(raw, "rust")
    assert switched == ["a", "r"]
    assert out["nodes"]["a"]["impl"] == "rust" and out["nodes"]["b"]["impl"] == "python"
    assert "impl" not in out["nodes"]["c"]
    assert "impl" not in raw["nodes"]["a"], "the input is not changed"
    assert switch_impl(raw, "rust", "clients")[1] == ["a"]
    assert switch_impl(raw, "rust", "relays")[1] == ["r"]
    with pytest.raises(ValueError):
        switch_impl(raw, "go")


def test_unknown_impl_names_the_field_with_did_you_mean() -> None:
    with pytest.raises(ScenarioError) as info:
        scenarios.get("sentry", "rsut")
    exc = info.value
    assert exc.field == "--impl"
    assert "did you mean 'rust'?" in str(exc) and "rust:clients" in str(exc)
    text = "description: x\ntopology: sentry\nimpls: [python, rusty]\n" + STEPS
    with pytest.raises(ScenarioError) as info:
        parse(text)
    assert info.value.field == "impls[1]" and "did you mean 'rust'?" in str(info.value)
    for bad, field in (("impls: rust\n", "impls"), ("impls: [rust, rust]\n", "impls[1]")):
        with pytest.raises(ScenarioError) as info:
            parse("description: x\ntopology: sentry\n" + bad + STEPS)
        assert info.value.field == field, str(info.value)


def test_impls_declared_in_the_file() -> None:
    sc = parse("description: x\ntopology: sentry\nimpls: [python, rust:clients]\n" + STEPS)
    assert sc.impls == ("python", "rust:clients")
    assert parse("description: x\ntopology: sentry\n" + STEPS).impls == ("python",)


def test_config_the_rust_node_ignores_is_refused_at_load() -> None:
    topo = """topology:
  networks:
    a: {subnet: 172.30.0.0/24, nat: cone}
    public: {subnet: 10.30.0.0/24, public: true}
  nodes:
    v0: {role: validator, networks: [a, public], config: {dcutr: {max_attempts: 2}}}
    v1: {role: validator, networks: [public], impl: python, config: {dcutr: {max_attempts: 2}}}
"""
    text = "description: x\n" + topo + "steps:\n  - check: consensus\n    deadline: 60\n"
    assert parse(text).switched == ()
    with pytest.raises(ScenarioError) as info:
        parse(text, "rust", "impls[1]")
    exc = info.value
    assert exc.field == "impls[1]"
    assert "v0" in exc.problem and "dcutr" in exc.problem and "ignores" in exc.problem
    assert "impl: python" in exc.fix
    # the pinned node with the same key is fine: only v0 is the problem
    assert "v1" not in exc.problem


def test_a_selector_for_the_other_impl_is_a_load_error() -> None:
    text = (
        "description: x\ntopology: sentry\nsteps:\n  - check: cross_network_sync\n"
        "    args: {node: python validator in b}\n    deadline: 60\n"
    )
    assert parse(text).check_names == ["cross_network_sync"]
    with pytest.raises(ScenarioError) as info:
        parse(text, "rust")
    assert "matches no node" in str(info.value) and "rust" in str(info.value)


def test_report_and_run_id_carry_the_impl(tmp_path: Path) -> None:
    sc = scenarios.get("relay-failover", "rust")
    run_dir = report.new_run_dir(tmp_path, sc.run_label)
    assert run_dir.name.endswith("-relay-failover-rust")
    doc = report.build_report(sc.name, [CheckOutcome("x", True, 1.0, "ok")], impl=sc.impl)
    assert doc["scenario"] == "relay-failover" and doc["impl"] == "rust"
    assert 'name="sentrynet.scenario.relay-failover[rust]"' in report.junit_xml(doc)
    assert "scenario relay-failover[rust]: PASSED" in report.summary_table(doc)
    json.dumps(doc)


def test_pytest_ids_are_impl_and_check() -> None:

    def ids(name: str) -> list[str]:
        return [p.id for p in flat(name)]

    sc = scenarios.get("relay-limits")
    want = [f"{impl}-{c}" for impl in sc.impls for c in sc.check_names]
    assert ids("relay-limits") == want
    for p in flat("seed-rust"):
        assert p.values[4] is True, "seed-rust runs rust nodes: needs the rust image"
    for p in flat("sentry"):
        assert p.values[4] is ("rust" in str(p.values[0]))
    # no library file lists engines (test_variants_of_a_file_with_rust has one that does)
    assert scenarios.get("sentry").engines == ("compose",)


def test_variants_of_a_file_with_rust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import test_scenarios

    lib = tmp_path / "library"
    lib.mkdir()
    (lib / "two.yaml").write_text(
        "description: x\ntopology: sentry\nimpls: [python, rust]\n" + STEPS
    )
    monkeypatch.setattr(scenarios.loader, "LIBRARY_DIR", lib)
    params = flat("two")
    assert [p.id for p in params] == ["python-reservations", "rust-reservations"]
    assert [p.values[4] for p in params] == [False, True]
    (lib / "both.yaml").write_text(
        "description: x\ntopology: sentry\nengines: [compose, swarm]\n" + STEPS
    )
    params = flat("both")
    assert [p.id for p in params] == ["python-reservations", "python-swarm-reservations"]
    assert [p.values[1] for p in params] == ["compose", "swarm"]
    for bad, said in (
        ("[compose, swrm]", "engines[1]: 'swrm' is not a known engine"),
        ("[swarm, swarm]", "engines[1]: 'swarm' is listed twice"),
        ("swarm", "engines: expected a list of engines"),
    ):
        (lib / "bad.yaml").write_text(f"description: x\ntopology: sentry\nengines: {bad}\n" + STEPS)
        with pytest.raises(SentrynetError, match=re.escape(said)):
            scenarios.get("bad")
    (lib / "bad.yaml").write_text(
        "description: x\ntopology: sentry\nimpls: [python, rst]\n" + STEPS
    )
    assert [p.id for p in flat("bad")] == ["python-load"]
    assert [t.class_name for t in test_scenarios.variants("two")] == [
        "Test_two_python",
        "Test_two_rust",
    ]
    assert [t.class_name for t in test_scenarios.variants("both")] == [
        "Test_both_python",
        "Test_both_python_swarm",
    ]


def flat(name: str) -> list[Any]:
    """Every pytest param of scenario `name`, whatever testnet judges it."""
    import test_scenarios

    return [p for params in test_scenarios.variants(name).values() for p in params]


def test_one_class_per_testnet_so_loadscope_keeps_a_run_on_one_worker() -> None:
    """`make test` runs the scenario tier with pytest-xdist --dist loadscope, which hands a
    class to one worker: each class must hold exactly the checks of one testnet, or two
    workers would each bring that testnet up (claim_run makes that a failure)."""
    import test_scenarios

    classes = test_scenarios.scenario_classes()
    seen: dict[tuple[str, str, str], str] = {}
    for class_name, cls in classes.items():
        runs = set()
        for attr, test in vars(cls).items():
            if not attr.startswith("test_"):
                continue
            for mark in test.pytestmark:
                for p in mark.args[1]:
                    impl, engine = p.values[0], p.values[1]
                    judged = scenarios.get(test.scenario, impl)
                    runs.add((judged.tested_by or judged.name, impl, engine))
        assert len(runs) == 1, f"{class_name} holds the checks of {sorted(runs)}"
        (run,) = runs
        assert run not in seen, f"{run} is split between {seen[run]} and {class_name}"
        seen[run] = class_name
    hairpin_home = classes["Test_port_forward_sentry_python"]
    assert {"test_hairpin", "test_port_forward_sentry"} <= set(vars(hairpin_home))
    assert "Test_hairpin_python" not in classes


def test_cli_list_shows_impls_and_check_loads_each(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.list_all() == 0
    lines = capsys.readouterr().out.splitlines()
    for line in lines:
        name = line.split()[0]
        shown = "[" + ", ".join(scenarios.get(name).impls) + "]"
        assert f"  {shown}  " in line, line
    f = tmp_path / "both.yaml"
    f.write_text("description: x\ntopology: sentry\nimpls: [python, rust]\n" + STEPS)
    assert cli.check_files([str(f)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("on python, rust")
    assert cli.check_files([str(f)], "rust:relays") == 0
    assert capsys.readouterr().out.rstrip().endswith("on rust:relays")


def test_every_shipped_file_loads_on_every_impl() -> None:
    for name in scenarios.SCENARIOS:
        for impl in IMPL_VARIANTS:
            sc = scenarios.get(name, impl)
            assert sc.check_names == scenarios.get(name).check_names
