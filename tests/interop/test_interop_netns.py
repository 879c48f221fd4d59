"""The rust-libp2p reference node behind a real NAT router (network namespaces,
tests/node/netns.py), hole-punched by our Python node.

rust-libp2p 0.56's DCUtR takes a relayed connection's hole-punch candidates when the
connection opens and never updates them. In seed-rust (CI) a rust validator reserved on its
network's sentry before the public relay's identify had come back; circuits through the
sentry then offered only its private address, and all three of rust-libp2p's attempts
failed. The node now reserves only once every configured relay has told it its address
(peers/rust/src/node/relays.rs `observations_pending`). Here the public relay is held
back by a firewall rule while the sentry answers at once: the node must not reserve on
the sentry until the public relay's identify is in, and a circuit through the sentry must
then upgrade to a direct connection between the two routers' public addresses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from netns import P2P_PORT, NatLab

from harness.model.keys import node_key
from testkit.procs import WaitTimeout, wait_for

pytestmark = [pytest.mark.interop, pytest.mark.netns]


def _first(events: list[dict[str, Any]], kind: str, **fields: str) -> dict[str, Any] | None:
    return next(
        (e for e in events if e["type"] == kind and all(e.get(k) == v for k, v in fields.items())),
        None,
    )


def test_rust_node_reserves_after_the_public_relays_identify_and_upgrades(
    nat_lab: NatLab, rust_node: Path
) -> None:
    r1, r2 = nat_lab.add_router("r1"), nat_lab.add_router("r2")
    p2p = {"discovery": False}
    server = {"enabled": True, "mode": "server"}
    sentry_host = nat_lab.add_dual_host("sentry", r1)  # r1's LAN and the public segment
    sentry = nat_lab.start_node(sentry_host, p2p=p2p, relay=server)
    relay_host = nat_lab.add_public_host("relay")
    relay = nat_lab.start_node(relay_host, p2p=p2p, relay=server)
    # the public relay drops what comes from r1 until the sentry has answered the node
    block = ["INPUT", "-s", r1.public_ip, "-j", "DROP"]
    relay_host.exec("iptables", "-I", *block)

    key = node_key("interop-netns", "validator")
    l_host = nat_lab.add_private_host("l", r1)
    # relays by address without peer id, as the seed and seed-rust configure them
    validator = nat_lab.start_node(
        l_host,
        command=lambda cfg: [str(rust_node), "--config", str(cfg)],
        key=key.private_key,
        p2p=p2p,
        relay={
            "enabled": True,
            "mode": "client",
            "relay_servers": [
                f"/ip4/{sentry_host.ip}/tcp/{P2P_PORT}",
                f"/ip4/{relay_host.ip}/tcp/{P2P_PORT}",
            ],
        },
    )
    assert validator.peer_id == key.peer_id
    try:
        wait_for(
            validator,
            lambda s: [
                c for c in s["connections"] if c["peer"] == sentry.peer_id and c["observed_addr"]
            ],
            "the sentry's identify on the validator",
            30,
        )
        held = validator.status()["reservations"]
        relay_host.exec("iptables", "-D", *block)
        assert not held, f"reserved while the public relay's identify was outstanding: {held}"
        wait_for(
            validator,
            lambda s: len([r for r in s["reservations"] if r.get("accepted_at")]) == 2,
            "reservations on the sentry and the public relay",
            60,
        )
        events = validator.events()
        relay_up = _first(events, "connection_opened", peer=relay.peer_id)
        first_reservation = _first(events, "reservation_accepted")
        assert relay_up and first_reservation, events
        assert first_reservation["seq"] > relay_up["seq"], (first_reservation, relay_up)

        # a full node behind r2 reaches the validator through the sentry's public side
        via_sentry = f"/ip4/{sentry_host.public_ip}/tcp/{P2P_PORT}/p2p/{sentry.peer_id}"
        full = nat_lab.start_node(
            nat_lab.add_private_host("d", r2),
            p2p={**p2p, "persistent_peers": [f"{via_sentry}/p2p-circuit/p2p/{key.peer_id}"]},
            relay={"enabled": True, "mode": "client", "relay_servers": [via_sentry]},
        )
        row = wait_for(
            validator,
            lambda s: [
                r for r in s["dcutr"] if r["peer"] == full.peer_id and r["outcome"] == "succeeded"
            ],
            "the validator's DCUtR with the full node to succeed",
            90,
        )[-1]
    except WaitTimeout as exc:
        tails = "\n".join(f"--- {n.name}\n{n.log_tail(40)}" for n in nat_lab.nodes)
        raise AssertionError(f"{exc}\n{nat_lab.describe()}\n{tails}") from None
    assert row["role"] == "initiator", row
    direct = [
        c for c in validator.status()["connections"]
        if c["peer"] == full.peer_id and c["kind"] == "direct"
    ]  # fmt: skip
    assert [c["remote_addr"] for c in direct] == [f"/ip4/{r2.public_ip}/tcp/{P2P_PORT}"], direct
