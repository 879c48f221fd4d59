"""`transports: [tcp, quic]` per node: QUIC beside TCP at the same p2p port, rendered as a
second listen address; validated like every other field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from test_topology import BASE, write

from harness.model.testnet import build_testnet
from harness.model.topology import load_topology
from node.config import ConfigError, parse_config


def test_quic_listens_beside_tcp_at_the_same_port(tmp_path: Path) -> None:
    doc = copy.deepcopy(BASE)
    doc["nodes"]["node0"]["transports"] = ["quic", "tcp"]
    topo = load_topology(write(tmp_path, doc))
    assert topo.node("node0").transports == ("tcp", "quic")  # canonical order
    assert topo.node("node4").transports == ("tcp",)  # the default
    tn = build_testnet(topo)
    node0 = tn.node("node0")
    ip, port = node0.addresses["a"], node0.p2p_port
    assert node0.listen_addrs == (f"/ip4/{ip}/tcp/{port}", f"/ip4/{ip}/udp/{port}/quic-v1")
    assert node0.p2p_addr.startswith(f"/ip4/{ip}/tcp/{port}/p2p/")  # dialed on TCP
    # the node accepts what render writes
    cfg = parse_config(
        {
            "node": {"name": "node0", "role": "validator"},
            "p2p": {"listen_addrs": list(node0.listen_addrs)},
            "api": {"listen": "10.250.0.10:9090"},
        }
    )
    assert cfg.p2p.listen_addrs[1].endswith("/quic-v1")


@pytest.mark.parametrize(
    ("p2p", "dcutr", "key", "problem"),
    [
        (["/ip4/10.0.0.1/udp/4001/quic-v1"], {}, "p2p.listen_addrs[0]", "is not TCP"),
        (["/ip4/10.0.0.1/udp/4001"], {}, "p2p.listen_addrs[0]", "or /ip4/<ip>/udp/<port>/quic-v1"),
        (["/ip4/10.0.0.1/tcp/4001"], {"transports": ["udp"]}, "dcutr.transports[0]", "'udp'"),
        (["/ip4/10.0.0.1/tcp/4001"], {"transports": []}, "dcutr.transports", "at least one"),
    ],
)
def test_node_config_names_a_bad_quic_setting(
    p2p: list[str], dcutr: dict[str, Any], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "node": {"name": "n0", "role": "full"},
                "p2p": {"listen_addrs": p2p},
                "api": {"listen": "10.250.0.10:9090"},
                "dcutr": dcutr,
            }
        )
    assert info.value.key == key, str(info.value)
    assert problem in str(info.value), str(info.value)
