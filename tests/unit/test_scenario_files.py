"""Scenario files (harness/scenarios/loader.py): every shipped file loads and validates
without Docker, selectors resolve against the topology, and each kind of mistake is an
error naming the file, the field and the fix."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import scenarios
from harness.cli import scenario as cli
from harness.model.topology import load_topology
from harness.run.steps import ActionStep, BackgroundStep, CheckStep, Scenario, WaitStep
from harness.scenarios.loader import ScenarioError, parse_scenario

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "scenarios" / "library").glob("*.yaml"))
CODE = [*(REPO / "harness" / "scenarios").glob("*.py"), REPO / "scenarios" / "test_scenarios.py"]

HEAD = "description: a test\ntopology: sentry\n"
SYNC = "steps:\n  - check: cross_network_sync\n    args: {node: "


def load(body: str, name: str = "t") -> Scenario:
    return parse_scenario(HEAD + body, Path(f"/x/{name}.yaml"), source=f"{name}.yaml")


def error(body: str, text: str = HEAD) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text + body, Path("/x/t.yaml"), source="t.yaml")
    return info.value


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_file_passes_scenario_check(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.check_files([str(path)]) == 0
    assert capsys.readouterr().out.startswith("ok ")


# the bug library (issue 11 part 3): reproduced public issues, each a file
LIBRARY = {
    "client-restart-loop",
    "relay-limits",
    "shared-port",
    "reservation-refresh",
    "advertised-addrs",
    "port-forward-sentry",
    "hairpin",
    "quic-cone",
}


def test_the_seven_scenarios_and_the_library_are_files() -> None:
    assert set(scenarios.SCENARIOS) == {
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
        *LIBRARY,
    }
    assert scenarios.get(str(SHIPPED[0])).name == SHIPPED[0].stem


def test_no_scenario_code_names_a_node() -> None:
    every = {n.name for f in (REPO / "scenarios").glob("*.yaml") for n in load_topology(f).nodes}
    names = {n for n in every if re.search(r"[0-9-]", n)}  # not plain words like "relay"
    assert "node4" in names
    for path in CODE:
        words = set(re.findall(r"[A-Za-z0-9_-]+", path.read_text()))
        assert not words & names, (path, sorted(words & names))


def test_selectors_resolve_against_the_topology() -> None:
    sc = scenarios.get("relay-failover")
    assert next(s.what for s in sc.steps if isinstance(s, ActionStep)) == "kill relay node3"
    sc = load(
        "steps:\n"
        "  - perturb: kill\n    node: all in b\n"
        "  - perturb: pause\n    node: {role: validator, network: a, pick: last}\n"
        "  - perturb: restart\n    node: sentries\n"
        "  - perturb: start\n    node: node6\n"
        "  - check: no_forks\n    deadline: 5\n"
    )
    whats = [s.what for s in sc.steps if isinstance(s, ActionStep)]
    assert whats == [
        "kill node4, node5, node6, node7",
        "pause node1",
        "restart node3, node7",
        "start node6",
    ]


def test_every_step_kind_loads() -> None:
    sc = load(
        "steps:\n"
        "  - check: consensus\n    args: {min_blocks: 2}\n    deadline: 60\n"
        "  - mark: heights\n    as: before\n    nodes: validators in a\n"
        "  - background: flapping link\n    every: 20\n    steps:\n"
        "      - perturb: disconnect\n        node: sentry in b\n        network: public\n"
        "      - perturb: reconnect\n        node: sentry in b\n        network: public\n"
        "  - repeat: 2\n    every: 10\n    steps:\n"
        "      - perturb: restart\n        node: first validator in b\n"
        "      - check: reservations\n        deadline: 30\n        requires: [consensus]\n"
        "  - wait: duration\n    seconds: 5\n    because: span a TTL\n"
        "  - wait: advanced\n    args: {min_blocks: 1, base_mark: before}\n    deadline: 30\n"
        "  - perturb: nat\n    network: a\n    nat: symmetric\n"
        "  - perturb: loss\n    network: b\n    pct: 5\n"
        "  - perturb: latency\n    network: b\n    ms: 50\n"
        "  - perturb: partition\n    networks: [a, b]\n"
        "  - perturb: clear\n"
        "  - check: dcutr_fails\n    expect: fails\n    reason: symmetric\n    deadline: 9\n"
    )
    steps = sc.steps
    assert [s.name for s in steps if isinstance(s, CheckStep)] == [
        "consensus",
        "reservations_1",
        "reservations_2",
        "dcutr_fails",
    ]
    bg = next(s for s in steps if isinstance(s, BackgroundStep))
    assert bg.every_s == 20 and len(bg.steps) == 2
    assert any(isinstance(s, WaitStep) for s in steps)


def test_inline_topology(tmp_path: Path) -> None:
    topo = (REPO / "scenarios" / "mini.yaml").read_text()
    indented = "\n".join("  " + line for line in topo.splitlines())
    f = tmp_path / "inline.yaml"
    f.write_text(
        "description: inline\ntopology:\n" + indented + "\nsteps:\n"
        "  - check: reservations\n    deadline: 10\n"
        "  - action: stop-and-wipe\n    node: validator in b\n"
    )
    sc = scenarios.get(str(f))
    assert Path(sc.topology).is_file()
    assert [s.what for s in sc.steps if isinstance(s, ActionStep)] == [
        "stop val-b and wipe its block store"
    ]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ("steps:\n  - chek: reservations\n", "steps[0].chek", "did you mean 'check'"),
        (
            "steps:\n  - check: reservation\n    deadline: 5\n",
            "steps[0].check",
            "did you mean 'reservations'",
        ),
        ("steps:\n  - check: reservations\n", "steps[0].deadline", "missing"),
        (
            "steps:\n  - check: reservations\n    deadline: 5\n    expect: fail\n",
            "steps[0].expect",
            "did you mean 'fails'",
        ),
        (
            "steps:\n  - check: consensus\n    args: {min_block: 3}\n    deadline: 5\n",
            "steps[0].args.min_block",
            "did you mean 'min_blocks'",
        ),
        (
            "steps:\n  - check: cross_network_sync\n    deadline: 5\n",
            "steps[0].args.node",
            "missing",
        ),
        (
            SYNC + "validators in b}\n    deadline: 5\n",
            "steps[0].args.node",
            "selects 2 nodes (node4, node5)",
        ),
        (
            SYNC + "validator in c}\n    deadline: 5\n",
            "steps[0].args.node",
            "not a known network",
        ),
        (
            SYNC + "validatr in b}\n    deadline: 5\n",
            "steps[0].args.node",
            "did you mean 'validator'",
        ),
        (
            SYNC + "rust validator}\n    deadline: 5\n",
            "steps[0].args.node",
            "matches no node",
        ),
        (
            "steps:\n  - check: reserved_elsewhere\n"
            "    args: {relay: validator in a}\n    deadline: 5\n",
            "steps[0].args.relay",
            "not a relay server",
        ),
        (
            "steps:\n  - check: reservations\n    deadline: 5\n    requires: [consensus]\n",
            "steps[0].requires[0]",
            "not a check before",
        ),
        (
            "steps:\n  - check: no_forks\n    deadline: 5\n  - check: no_forks\n    deadline: 5\n",
            "steps[1].check",
            "already in this scenario",
        ),
        (
            "steps:\n  - check: relayed_circuit\n    expect: impossible\n    deadline: 5\n",
            "steps[0].expect",
            "analyse-reach",
        ),
        (
            "steps:\n  - check: no_forks\n    reason: x\n    deadline: 5\n",
            "steps[0].reason",
            "only for `expect: fails`",
        ),
        (
            "steps:\n  - wait: duration\n    seconds: 10\n  - check: no_forks\n    deadline: 5\n",
            "steps[0].because",
            "time itself is the subject",
        ),
        ("steps:\n  - perturb: kil\n    node: node1\n", "steps[0].perturb", "did you mean 'kill'"),
        (
            "steps:\n  - perturb: nat\n    network: public\n    nat: cone\n",
            "steps[0].network",
            "NAT'd private network",
        ),
        (
            "steps:\n  - perturb: loss\n    network: a\n    pct: 120\n",
            "steps[0].pct",
            "out of range",
        ),
        (
            "steps:\n  - action: partition\n    networks: [a, a]\n    cut: sentry in a\n",
            "steps[0].networks",
            "the same network twice",
        ),
        (
            "steps:\n  - background: x\n    every: 5\n    steps:\n"
            "      - check: no_forks\n        deadline: 5\n",
            "steps[0].steps[0].check",
            "not `check`",
        ),
        ("steps:\n  - mark: heights\n", "steps[0].as", "missing"),
        ("steps:\n  - perturb: clear\n", "steps", "no `check:` step"),
        ("steps: []\n", "steps", "add at least one step"),
        ("stepz: []\n", "stepz", "did you mean 'steps'"),
    ],
)
def test_errors_name_the_field_and_the_fix(body: str, field: str, words: str) -> None:
    exc = error(body)
    assert exc.file == "t.yaml"
    assert exc.field == field, str(exc)
    assert words in str(exc), str(exc)


def test_file_level_errors() -> None:
    assert error("steps: []\n", "description: x\ntopology: sentri\n").field == "topology"
    assert "did you mean 'sentry'" in str(
        error("steps: []\n", "description: x\ntopology: sentri\n")
    )
    assert error("", "name: other\ndescription: x\ntopology: sentry\nsteps: []\n").field == "name"
    assert error("", "topology: sentry\nsteps: []\n").field == "description"
    assert error("", "a: [\n").problem.startswith("not valid YAML")
    assert "duplicate key" in str(error("", "description: x\ndescription: y\n"))
    bad_topology = "description: x\ntopology: {networks: {a: {subnet: 10.0.0.0/24}}}\n"
    exc = error("steps: []\n", bad_topology)
    assert exc.field.startswith("topology"), str(exc)


def test_cli_list_and_check(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD + "steps:\n  - chek: reservations\n")
    run = [sys.executable, "-m", "harness.cli", "scenario"]
    out = subprocess.run([*run, "list"], capture_output=True, text=True, cwd=REPO, check=True)
    assert len(out.stdout.splitlines()) == len(SHIPPED)
    assert out.stdout.splitlines()[0].startswith(SHIPPED[0].stem + " ")
    res = subprocess.run([*run, "check", str(bad)], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 1 and "steps[0].chek: not a step kind" in res.stdout


def test_the_worked_example_in_the_docs_loads(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "scenarios.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    f = tmp_path / "client-restart-loop.yaml"
    f.write_text(block)
    sc = scenarios.get(str(f))
    assert sc.check_names == [
        "reservations",
        *(f"reservations_{i}" for i in range(1, 6)),
        "no_forks",
    ]


def test_tested_by_names_a_scenario_on_the_same_topology_holding_every_check() -> None:
    """hairpin's checks are judged in port-forward-sentry's run (scenarios/test_scenarios.py);
    a `tested_by:` that could not judge them is an error at load, not a missing test."""
    hairpin = scenarios.get("hairpin")
    host = scenarios.get("port-forward-sentry")
    assert hairpin.tested_by == "port-forward-sentry"
    assert set(hairpin.check_names) <= set(host.check_names)
    head = "description: x\ntopology: port-forward-sentry\n"
    one_check = "steps:\n  - check: no_forks\n    deadline: 5\n"
    for tested_by, words in [
        ("port-forward-sentri", "did you mean 'port-forward-sentry'"),
        ("t", "not another library scenario"),
        ("sentry", "runs another topology"),
        ("hairpin", "is itself `tested_by: port-forward-sentry`"),
    ]:
        exc = error(one_check, head + f"tested_by: {tested_by}\n")
        assert exc.field == "tested_by" and words in str(exc), str(exc)
    exc = error(
        "steps:\n  - check: dcutr_fails\n    expect: fails\n    reason: x\n    deadline: 5\n",
        head + "tested_by: port-forward-sentry\n",
    )
    assert exc.field == "tested_by" and "has no check named dcutr_fails" in str(exc), str(exc)
