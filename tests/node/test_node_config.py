"""`python -m node --config FILE`: exit 2 naming the bad key; a good config runs and
stops cleanly on SIGTERM; the API serves /status, /events and /metrics as contracted."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from node.config import ConfigError, load_config, validate_overrides
from testkit.procs import REPO, NodeProcs, render_toml, wait_for

GOOD: dict[str, dict[str, Any]] = {
    "node": {"name": "n0", "role": "validator", "key_file": "n0.key"},
    "p2p": {"listen_addrs": ["/ip4/127.0.0.1/tcp/4001"]},
    "api": {"listen": "127.0.0.1:9000"},
}


def run_node(tmp_path: Path, doc: dict[str, dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "node.toml"
    cfg.write_text(render_toml(doc))
    return subprocess.run(
        [sys.executable, "-m", "node", "--config", str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"relay": {"mode": "clinet"}}, "relay.mode: 'clinet' is not one of client, server, both"),
        (
            {"node": {"name": "n0", "rol": "full"}},
            "node.rol: unknown key; valid keys in [node]: data_dir, key_file, name, role",
        ),
        ({"p2p": {"listen_addrs": ["/ip4/0.0.0.0/tcp/4001"]}}, "p2p.listen_addrs[0]"),
        (
            {"relay": {"max_reservations_held": "2"}},
            "relay.max_reservations_held: expected an integer",
        ),
        ({"relay": {"relay_servers": ["not-a-multiaddr"]}}, "relay.relay_servers[0]"),
        ({"dcutr": {"max_attempts": 0}}, "dcutr.max_attempts: must be > 0"),
        (
            {"chain": {"validators": ["a"], "validator_ids": {"b": "12D3KooW"}}},
            "chain.validator_ids.b: not in chain.validators",
        ),
        ({"bogus": {"x": 1}}, "bogus: unknown section"),
        # TOML has nan and inf; `<= 0` is false for nan, so they once passed and stopped
        # the node later (issue 16)
        ({"p2p": {"ping_interval_s": float("nan")}}, "p2p.ping_interval_s: must be a finite"),
        (
            {"p2p": {"listen_addrs": ["/ip4/127.0.0.1/tcp/4001"], "low_watermark": 33}},
            "p2p.low_watermark: must be from 0 to p2p.max_connections (32), got 33",
        ),
        (
            {"p2p": {"listen_addrs": ["/ip4/127.0.0.1/tcp/4001"], "low_watermark": "4"}},
            "p2p.low_watermark: expected an integer",
        ),
        ({"chain": {"block_interval_s": float("inf")}}, "chain.block_interval_s: must be a finite"),
        # a '%' in the name broke every log line; digits of another script passed isdigit();
        # a host name made the node exit 1 without naming the key; a p2p listen on the API's
        # IP and port was missed when written differently
        ({"node": {"name": "n%d"}}, "node.name: 'n%d' is not a node name"),
        ({"api": {"listen": "127.0.0.1:\u0669\u0660\u0660\u0660"}}, "api.listen:"),
        ({"api": {"listen": "no-such-host:9000"}}, "api.listen: 'no-such-host' is not an IP"),
        (
            {"p2p": {"listen_addrs": ["/ip4/127.0.0.1/tcp/9000"]}},
            "api.listen: '127.0.0.1:9000' collides with p2p listen /ip4/127.0.0.1/tcp/9000",
        ),
    ],
)
def test_invalid_config_exits_2_naming_the_key(
    tmp_path: Path, patch: dict[str, dict[str, object]], message: str
) -> None:
    doc = {k: dict(v) for k, v in GOOD.items()}
    for sec, vals in patch.items():
        doc.setdefault(sec, {}).update(vals)
    res = run_node(tmp_path, doc)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("config error: ")
    assert message in res.stderr


def test_invalid_config_is_rejected_before_libp2p_is_imported(tmp_path: Path) -> None:
    """Importing py-libp2p takes tens of seconds on a loaded machine: `python -m node`
    checks the config first, so a bad one exits 2 without importing libp2p at all."""
    doc = {k: dict(v) for k, v in GOOD.items()}
    doc["relay"] = {"mode": "clinet"}
    cfg = tmp_path / "node.toml"
    cfg.write_text(render_toml(doc))
    probe = (
        "import sys; from node.__main__ import main; rc = main(['--config', sys.argv[1]]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'libp2p')); sys.exit(rc)"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe, str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2, res.stderr
    assert "relay.mode" in res.stderr
    assert res.stdout.strip() == "[]", res.stdout


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\nname=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(render_toml(GOOD).encode().replace(b'"n0"', b'"n\xe9"'))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(latin)


def test_api_port_only_collides_with_the_same_port(tmp_path: Path) -> None:
    """The old substring test took p2p port 9000 for a clash with API port 900."""
    doc = {k: dict(v) for k, v in GOOD.items()}
    doc["api"] = {"listen": "127.0.0.1:900"}
    doc["p2p"] = {"listen_addrs": ["/ip4/127.0.0.1/tcp/9000"]}
    cfg_path = tmp_path / "n.toml"
    cfg_path.write_text(render_toml(doc))
    assert load_config(cfg_path).api.listen == "127.0.0.1:900"


@pytest.mark.parametrize(
    "content", [b"", b"\x08\x01\x12", b"not a key at all"], ids=["empty", "truncated", "garbage"]
)
def test_unusable_key_file_exits_2_naming_the_key(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "n0.key").write_bytes(content)
    res = run_node(tmp_path, GOOD)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("config error: node.key_file: "), res.stderr
    assert "Traceback" not in res.stderr


def test_defaults_are_sized_for_consensus(tmp_path: Path) -> None:
    cfg_path = tmp_path / "n.toml"
    cfg_path.write_text(render_toml(GOOD))
    cfg = load_config(cfg_path)
    assert cfg.relay.max_reservations_held == 2
    assert cfg.relay.circuit_duration_s >= 3600 and cfg.relay.circuit_bytes >= 1 << 30
    assert cfg.node.key_file == str(tmp_path / "n0.key")  # relative to the config file


@pytest.mark.parametrize(
    ("override", "key", "problem", "fix"),
    [
        ({"p2p": {"ping_failures": 0}}, "p2p.ping_failures", "must be > 0", ""),
        ({"relay": {"mode": "clinet"}}, "relay.mode", "is not one of client, server", ""),
        ({"relay": {"ttl": 1}}, "relay.ttl", "unknown key", "valid keys: enabled, mode"),
        ({"dcutr": {"max_atempts": 1}}, "dcutr.max_atempts", "unknown key", "'max_attempts'?"),
        ({"relays": {}}, "relays", "not a node config section", "valid sections: node, p2p"),
        ({"api": {"listen": "1.2.3.4:9"}}, "api.listen", "derived", "set it through X"),
    ],
)
def test_overrides_are_checked_against_the_same_schema(
    override: dict[str, Any], key: str, problem: str, fix: str
) -> None:
    """A partial config (a topology's `config:`) fails naming section.key and the fix."""
    with pytest.raises(ConfigError) as info:
        validate_overrides(override, derived={"api.listen": "X"})
    assert info.value.key == key
    assert problem in info.value.problem
    assert fix in info.value.fix


def test_overrides_accept_documented_keys() -> None:
    ok = {"p2p": {"ping_interval_s": 1, "ping_timeout_s": 2.5}, "dcutr": {"enabled": False}}
    assert validate_overrides(ok) == ok
    assert validate_overrides({"p2p": {"low_watermark": 0}}) == {"p2p": {"low_watermark": 0}}


@pytest.mark.loopback
def test_api_contract_and_clean_sigterm(tmp_path: Path) -> None:
    with NodeProcs(tmp_path) as procs:
        node = procs.start("n0", relay={"enabled": True, "mode": "both"})
        st = node.status()
        for key in (
            "peer_id",
            "name",
            "role",
            "started_at",
            "uptime_s",
            "listen_addrs",
            "advertised_addrs",
            "reservations",
            "relay_candidates",
            "connections",
            "circuits",
            "dcutr",
            "chain",
            "rejected",
        ):
            assert key in st, key
        assert st["listen_addrs"] == [node.p2p_addr]
        assert set(st["rejected"]) >= {"hop", "stop", "dcutr", "sync", "consensus"}
        doc = json.loads(node.get("/events?since=0"))
        assert set(doc) == {"next", "events"}
        assert all({"seq", "t", "type"} <= set(e) for e in doc["events"])
        later = json.loads(node.get(f"/events?since={doc['next']}"))
        assert later["events"] == [] or later["events"][0]["seq"] >= doc["next"]
        metrics = node.metrics()
        for name in (
            "reservations_active",
            "circuits_active",
            "relayed_bytes_total",
            "reservations_total",
            "circuits_total",
            "dcutr_total",
            "holepunch_duration_seconds",
            "messages_rejected_total",
            "connections_active",
            "chain_height",
            "blocks_synced_total",
        ):
            assert f"# TYPE sentrynet_{name} " in metrics, name
        assert "libp2p" not in metrics  # py-libp2p's own collectors stay out
        t0 = time.monotonic()
        rc = node.stop()
        assert rc == 0, node.log_tail()
        assert time.monotonic() - t0 < 10
        assert "shutting down" in node.log_tail()

        # the same key file gives the same peer id on restart
        procs.launch(node)
        wait_for(node, lambda s: s["peer_id"] == st["peer_id"], "same peer id")


def test_p2p_port_taken_exits_1_naming_the_address(tmp_path: Path) -> None:
    """Issue 10 defect: with its p2p port taken the node used to log "listening on ..."
    and report ready with no listener. It must stop, naming the key and the reason."""
    with NodeProcs(tmp_path) as procs:
        node = procs.write_config("n")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
            squatter.bind((node.ip, node.p2p_port))
            squatter.listen()
            procs.launch(node, wait_ready=False)
            assert node.proc is not None
            rc = node.proc.wait(60)
        log = node.log_path.read_text()
        assert rc == 1, log[-3000:]
        assert "p2p.listen_addrs: cannot listen on" in log, log[-3000:]
        assert f"/tcp/{node.p2p_port}" in log and "in use" in log, log[-3000:]


def test_unbound_names_only_addresses_without_a_listener() -> None:
    from multiaddr import Multiaddr

    from node.listen import unbound

    want = [Multiaddr("/ip4/127.0.0.1/tcp/4001"), Multiaddr("/ip4/0.0.0.0/tcp/0")]
    assert unbound(want, [Multiaddr("/ip4/127.0.0.1/tcp/4001")]) == []
    assert unbound([want[1]], [Multiaddr("/ip4/10.0.0.2/tcp/39000")]) == []
    missing = unbound(want[:1], [Multiaddr("/ip4/127.0.0.1/tcp/4002")])
    assert len(missing) == 1 and missing[0].startswith("/ip4/127.0.0.1/tcp/4001: ")
