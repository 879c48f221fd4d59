"""Circuit relay v2 on real node processes over loopback (several processes, real sockets).

Each test starts nodes with `python -m node --config ...` (testkit/procs.py) and asserts
through their HTTP API with deadline polling; an in-test libp2p peer (probe.py) drives
exact hop frames and pings through circuits.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID
from probe import HOP_ID, HopMessage, circuit, connect, ping, probe_host

from testkit.procs import NodeProc, NodeProcs, wait_for, wait_until

pytestmark = pytest.mark.loopback


def relay_server(procs: NodeProcs, name: str = "relay", **relay: Any) -> NodeProc:
    return procs.start(
        name, node={"role": "sentry"}, relay={"enabled": True, "mode": "server", **relay}
    )


def relay_client(procs: NodeProcs, name: str, relays: list[str], **extra: Any) -> NodeProc:
    sections: Any = {
        "relay": {"enabled": True, "mode": "client", "relay_servers": relays},
        "p2p": {"discovery": False},
    }
    for k, v in extra.items():
        sections.setdefault(k, {}).update(v)
    return procs.start(name, **sections)


def event_types(node: NodeProc) -> list[str]:
    return [e["type"] for e in node.events()]


def test_reservation_after_dynamic_discovery_without_peer_id(tmp_path: Path) -> None:
    """relay_servers holds only /ip4/../tcp/..: identify matches the relay, it reserves,
    and the circuit address is advertised (and pushed) to its peers."""
    with NodeProcs(tmp_path) as procs:
        relay = relay_server(procs)
        t0 = time.monotonic()
        client = relay_client(procs, "client", [relay.p2p_addr])
        resv = wait_for(client, lambda s: s["reservations"], "reservation", 15)
        took = time.monotonic() - t0
        relay_id = relay.peer_id
        assert resv[0]["relay"] == relay_id
        assert resv[0]["expires_at"] > time.time() + 3000
        st = client.status()
        assert st["relay_candidates"] == [
            {"peer": relay_id, "addr": relay.p2p_addr, "source": "config"}
        ]
        circuit_addr = f"{relay.p2p_addr}/p2p/{relay_id}/p2p-circuit/p2p/{st['peer_id']}"
        assert circuit_addr in st["advertised_addrs"]
        types = event_types(client)
        assert types.index("relay_discovered") < types.index("reservation_accepted")
        assert client.metric("sentrynet_reservations_active") == 1
        assert relay.metric("sentrynet_reservations_total", outcome="accepted") == 1
        # the relay logs the grant on its side
        wait_until(
            lambda: any(e.get("type") == "reservation_granted" for e in relay.events()),
            "relay-side reservation event",
        )
        since_start = resv[0]["accepted_at"] - st["started_at"]
        print(
            f"reservation accepted {since_start:.3f}s after node start "
            f"({took:.2f}s after process launch)"
        )


def test_dialer_reaches_target_through_circuit(tmp_path: Path) -> None:
    """A dialer whose only direct address for the target is dead falls back to the relay;
    the relayed connection carries identify both ways; a probe pings through a circuit."""
    with NodeProcs(tmp_path) as procs:
        relay = relay_server(procs)
        # DCUtR off: on loopback it would replace the circuit we want to look at
        target = relay_client(procs, "target", [relay.p2p_addr], dcutr={"enabled": False})
        wait_for(target, lambda s: s["reservations"], "target reservation", 15)
        target_id = target.peer_id
        dead = f"/ip4/127.0.0.1/tcp/9/p2p/{target_id}"  # nothing listens there
        dialer = relay_client(
            procs,
            "dialer",
            [f"{relay.p2p_addr}/p2p/{relay.peer_id}"],
            p2p={"persistent_peers": [dead]},
            dcutr={"enabled": False},
        )
        conn = wait_for(
            dialer,
            lambda s: [
                c for c in s["connections"] if c["peer"] == target_id and c["kind"] == "relayed"
            ],
            "relayed connection to target",
            30,
        )[0]
        assert conn["relay"] == relay.peer_id and conn["direction"] == "outbound"
        assert "/p2p-circuit" in conn["remote_addr"]
        wait_for(
            target,
            lambda s: [
                c
                for c in s["connections"]
                if c["kind"] == "relayed" and c["peer"] == dialer.peer_id
            ],
            "inbound circuit",
        )
        circ = wait_for(relay, lambda s: s["circuits"], "circuit on relay")[0]
        assert {circ["src"], circ["dst"]} == {dialer.peer_id, target_id}
        # identify ran both ways over the circuit: bytes in both directions
        wait_for(
            relay,
            lambda s: s["circuits"] and s["circuits"][0]["bytes"] > 1000,
            "bytes through the circuit",
        )
        assert "circuit_opened" in event_types(dialer)
        # gossipsub streams opened over the relayed connection, both ways
        wait_for(dialer, lambda s: target_id in s["pubsub_peers"], "pubsub peer over circuit")
        wait_for(target, lambda s: dialer.peer_id in s["pubsub_peers"], "pubsub peer (target)")
        assert [c["kind"] for c in dialer.status()["connections"] if c["peer"] == target_id] == [
            "relayed"
        ]

        async def through_probe() -> list[bytes]:
            async with probe_host() as h:
                rid = await connect(h, f"{relay.p2p_addr}/p2p/{relay.peer_id}")
                c, code = await circuit(h, rid, ID.from_base58(target_id))
                assert c is not None, f"relay answered {code}"
                return await ping(c, rounds=5)

        echoed = trio.run(through_probe)
        assert len(echoed) == 5
        assert relay.metric("sentrynet_relayed_bytes_total") > 1000


def test_connection_kind_is_recorded_where_the_connection_is_made(tmp_path: Path) -> None:
    """Each side reports what made its connections: the TCP dials and accepts to the relay
    are direct (at the relay's TCP address), the dialer's circuit and the target's accepted
    circuit are relayed, through that relay (node/relay/stop.py records them)."""
    with NodeProcs(tmp_path) as procs:
        relay = relay_server(procs)
        target = relay_client(procs, "target", [relay.p2p_addr], dcutr={"enabled": False})
        wait_for(target, lambda s: s["reservations"], "target reservation", 15)
        dead = f"/ip4/127.0.0.1/tcp/9/p2p/{target.peer_id}"  # only a circuit reaches it
        dialer = relay_client(
            procs,
            "dialer",
            [relay.p2p_addr],
            p2p={"persistent_peers": [dead]},
            dcutr={"enabled": False},
        )

        def rows(node: NodeProc, peer: str) -> list[dict[str, Any]]:
            return [c for c in node.status()["connections"] if c["peer"] == peer]

        wait_for(
            dialer,
            lambda s: [c for c in s["connections"] if c["peer"] == target.peer_id],
            "a connection to the target",
            30,
        )
        wait_for(
            target,
            lambda s: [c for c in s["connections"] if c["peer"] == dialer.peer_id],
            "the dialer's circuit",
        )
        for node, other, direction in ((dialer, target, "outbound"), (target, dialer, "inbound")):
            (row,) = rows(node, other.peer_id)
            assert (row["kind"], row["relay"], row["direction"]) == (
                "relayed",
                relay.peer_id,
                direction,
            )
            assert row["remote_addr"].startswith(f"{relay.p2p_addr}/p2p/{relay.peer_id}")
            assert row["remote_addr"].endswith(f"/p2p-circuit/p2p/{other.peer_id}")
            (to_relay,) = rows(node, relay.peer_id)
            assert (to_relay["kind"], to_relay["relay"]) == ("direct", None)
            assert to_relay["remote_addr"] == relay.p2p_addr
        assert {c["kind"] for c in relay.status()["connections"]} == {"direct"}


def test_relay_restart_client_reserves_again(tmp_path: Path) -> None:
    """The client notices the lost relay, withdraws its circuit address (identify push
    to a connected watcher), redials with backoff, reserves again and re-advertises."""
    with NodeProcs(tmp_path) as procs:
        relay = relay_server(procs)
        client = relay_client(procs, "client", [relay.p2p_addr])
        first = wait_for(client, lambda s: s["reservations"], "reservation", 15)[0]
        cid = client.peer_id
        watcher = procs.start(
            "watcher",
            p2p={"persistent_peers": [f"{client.p2p_addr}/p2p/{cid}"], "discovery": False},
        )

        def watcher_sees_circuit(s: dict[str, Any]) -> bool:
            addrs = [a for k in s["peers_known"] if k["peer"] == cid for a in k["addrs"]]
            return any("/p2p-circuit" in a for a in addrs)

        wait_for(watcher, watcher_sees_circuit, "client's circuit address at the watcher")
        relay.stop()
        wait_for(client, lambda s: not s["reservations"], "reservation dropped", 15)
        st = client.status()
        assert not any("/p2p-circuit" in a for a in st["advertised_addrs"])
        wait_for(watcher, lambda s: not watcher_sees_circuit(s), "circuit address withdrawn")
        t0 = time.monotonic()
        procs.launch(relay)
        again = wait_for(
            client,
            lambda s: [r for r in s["reservations"] if r["accepted_at"] > first["accepted_at"]],
            "reservation after relay restart",
            30,
        )[0]
        wait_for(watcher, watcher_sees_circuit, "circuit address pushed again")
        took = time.monotonic() - t0
        assert again["relay"] == first["relay"]
        types = event_types(client)
        assert types.count("reservation_accepted") == 2
        assert "reservation_expired" in types
        relay_started = relay.status()["started_at"]  # same monotonic clock (one host)
        print(
            f"re-reserved {again['accepted_at'] - relay_started:.3f}s after the relay "
            f"restarted ({took:.2f}s after its process launch)"
        )


def test_relay_back_through_a_circuit_first_still_gets_a_direct_reservation(
    tmp_path: Path,
) -> None:
    """A restarted relay that reaches the client through another relay's circuit before
    the client redials it: the client still dials it directly and reserves again (seen in
    relay-failover: node3 came back, dialed node4..6 through node7, and they never reserved
    on node3 again: upstream host.connect returns at once for a peer connected in any way,
    and a RESERVE over the relayed connection is refused)."""
    with NodeProcs(tmp_path) as procs:
        relay = relay_server(procs)
        other = relay_server(procs, "other")
        # DCUtR off: on loopback it would turn the relayed connection direct by itself
        client = relay_client(
            procs, "client", [relay.p2p_addr, other.p2p_addr], dcutr={"enabled": False}
        )
        both = wait_for(client, lambda s: len(s["reservations"]) == 2 and s, "2 reservations", 20)
        relay_id, cid = relay.peer_id, client.peer_id
        first = next(r for r in both["reservations"] if r["relay"] == relay_id)
        relay.stop()
        wait_for(
            client,
            lambda s: all(r["relay"] != relay_id for r in s["reservations"]),
            "reservation on the stopped relay dropped",
            15,
        )
        # the client's redials back off to their longest interval before the relay returns,
        # so the relay's own circuit dial (at its start) usually comes first
        wait_until(lambda: "retry in 4.00s" in client.log_tail(200), "client redial backoff", 30)
        through_other = f"{other.p2p_addr}/p2p/{other.peer_id}/p2p-circuit/p2p/{cid}"
        procs.start(
            "relay",
            node={"role": "sentry"},
            relay={"enabled": True, "mode": "server"},
            p2p={"persistent_peers": [through_other], "discovery": False},
        )
        wait_for(
            relay,
            lambda s: [c for c in s["connections"] if c["peer"] == cid and c["kind"] == "relayed"],
            "restarted relay reaches the client through the other relay",
            30,
        )
        again = wait_for(
            client,
            lambda s: [
                r
                for r in s["reservations"]
                if r["relay"] == relay_id and r["accepted_at"] > first["accepted_at"]
            ],
            "reservation on the restarted relay",
            30,
        )[0]
        kinds = {c["kind"] for c in client.status()["connections"] if c["peer"] == relay_id}
        assert "direct" in kinds, kinds
        assert again["addrs"][0].startswith(relay.p2p_addr)
        denied = [
            e
            for e in client.events()
            if e["type"] == "reservation_denied"
            and e.get("relay") == relay_id
            and "PERMISSION_DENIED" in str(e.get("reason"))
        ]
        assert not denied, denied  # never asked over the relayed connection


def test_two_dialers_keep_independent_circuits(tmp_path: Path) -> None:
    """Closing one dialer's circuit to a target leaves another dialer's circuit working
    (upstream CircuitV2Protocol keys circuits by peer id and tears the other one down)."""
    with NodeProcs(tmp_path) as procs:
        relay = relay_server(procs)
        target = relay_client(procs, "target", [relay.p2p_addr], dcutr={"enabled": False})
        wait_for(target, lambda s: s["reservations"], "target reservation", 15)
        tid = ID.from_base58(target.peer_id)
        relay_addr = f"{relay.p2p_addr}/p2p/{relay.peer_id}"

        async def scenario() -> None:
            async with probe_host() as h1, probe_host() as h2:
                r1 = await connect(h1, relay_addr)
                r2 = await connect(h2, relay_addr)
                c1, code1 = await circuit(h1, r1, tid)
                c2, code2 = await circuit(h2, r2, tid)
                assert c1 is not None and c2 is not None, (code1, code2)
                await ping(c1)
                await ping(c2)
                await trio.to_thread.run_sync(
                    lambda: wait_for(relay, lambda s: len(s["circuits"]) == 2, "2 circuits")
                )
                await c1.close()
                await trio.to_thread.run_sync(
                    lambda: wait_for(
                        relay, lambda s: len(s["circuits"]) == 1, "first circuit closed"
                    )
                )
                # the second dialer's circuit still carries data
                echoed = await ping(c2, rounds=3)
                assert len(echoed) == 3
                left = relay.status()["circuits"][0]
                assert left["src"] == str(h2.get_id())

        trio.run(scenario)
        closed = [e for e in relay.events() if e["type"] == "circuit_closed"]
        assert len(closed) == 1 and closed[0]["reason"] == "closed"


def test_refresh_before_expiry_and_failover(tmp_path: Path) -> None:
    """Short reservations are refreshed before they expire; with max_reservations_held=1
    the client moves to the other configured relay when its relay goes away."""
    with NodeProcs(tmp_path) as procs:
        r1 = relay_server(procs, "r1", reservation_ttl_s=4)
        r2 = relay_server(procs, "r2", reservation_ttl_s=4)
        client = relay_client(
            procs, "client", [r1.p2p_addr, r2.p2p_addr], relay={"max_reservations_held": 1}
        )
        first = wait_for(client, lambda s: s["reservations"], "reservation", 15)[0]
        renewed = wait_for(
            client,
            lambda s: [r for r in s["reservations"] if r["expires_at"] > first["expires_at"]],
            "refreshed reservation",
            15,
        )[0]
        assert renewed["relay"] == first["relay"]
        assert "reservation_expired" not in event_types(client)
        assert len(client.status()["reservations"]) == 1
        held, other = (r1, r2) if first["relay"] == r1.peer_id else (r2, r1)
        other_id = other.peer_id
        held.stop()
        moved = wait_for(
            client,
            lambda s: [r for r in s["reservations"] if r["relay"] == other_id],
            "reservation moved to the other relay",
            20,
        )[0]
        st = client.status()
        assert len(st["reservations"]) == 1
        assert any(f"/p2p/{other_id}/p2p-circuit" in a for a in st["advertised_addrs"])
        assert moved["addrs"][0].startswith(other.p2p_addr)


def test_any_identified_hop_peer_is_a_candidate(tmp_path: Path) -> None:
    """No relay_servers at all: a peer met otherwise (here a persistent peer) that
    identify shows speaking the hop protocol becomes a candidate and is reserved on."""
    with NodeProcs(tmp_path) as procs:
        relay = relay_server(procs)
        plain = procs.start("plain", p2p={"discovery": False})  # speaks no hop
        client = relay_client(
            procs,
            "client",
            [],
            p2p={"persistent_peers": [relay.p2p_addr, plain.p2p_addr]},
        )
        resv = wait_for(client, lambda s: s["reservations"], "reservation", 15)
        assert resv[0]["relay"] == relay.peer_id
        st = client.status()
        assert st["relay_candidates"] == [
            {"peer": relay.peer_id, "addr": relay.p2p_addr, "source": "identify"}
        ]
        assert {c["peer"] for c in st["connections"]} >= {relay.peer_id, plain.peer_id}


def test_probe_cli_dials_a_direct_address_and_a_circuit(tmp_path: Path) -> None:
    """`python -m node.probe dial` (what the scenario actions run inside a container): a
    new host pings a node at its direct address (a port forward's target), and at its
    circuit address through a relay; a wrong peer id at a live address fails with why."""
    import json
    import subprocess
    import sys

    def run_probe(addr: str) -> dict[str, Any]:
        res = subprocess.run(
            [sys.executable, "-m", "node.probe", "dial", addr],
            capture_output=True,
            text=True,
            timeout=90,
            check=True,
        )
        return dict(json.loads(res.stdout.strip().splitlines()[-1]))

    with NodeProcs(tmp_path) as procs:
        relay = relay_server(procs)
        target = relay_client(procs, "target", [relay.p2p_addr], dcutr={"enabled": False})
        wait_for(target, lambda s: s["reservations"], "target reservation", 15)
        direct = run_probe(f"{target.p2p_addr}/p2p/{target.peer_id}")
        assert direct["ok"] is True and direct["rtt_s"] > 0, direct
        circuit_addr = f"{relay.p2p_addr}/p2p/{relay.peer_id}/p2p-circuit/p2p/{target.peer_id}"
        relayed = run_probe(circuit_addr)
        assert relayed["ok"] is True, relayed
        wrong = run_probe(f"{target.p2p_addr}/p2p/{relay.peer_id}")  # target's port, relay's id
        assert wrong["ok"] is False and wrong["error"], wrong


@pytest.mark.parametrize("with_id", [True, False], ids=["with-peer-id", "address-only"])
def test_a_configured_relay_is_reserved_on_once_dialed_without_identify(
    tmp_path: Path, with_id: bool
) -> None:
    """The peer that answers the dial at a relay_servers address is the relay: the client
    reserves as soon as the dial is through, with or without the /p2p/<id> in the address,
    even when the relay never answers identify (a relay too busy to, as the sentries of a
    128-node testnet were). The stand-in relay is a probe that grants every RESERVE and has
    no identify handler; matching by identify alone never reserves."""
    from libp2p.identity.identify.identify import ID as IDENTIFY_ID
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import Reservation

    from node.relay.wire import read_msg, write_msg

    granted: list[str] = []

    async def grant(stream: Any) -> None:
        req = await read_msg(stream, HopMessage)
        granted.append(str(stream.muxed_conn.peer_id))
        ok = HopMessage(
            type=HopMessage.STATUS,
            status=100,
            reservation=Reservation(expire=int(time.time()) + 3600),
        )
        assert req.type == HopMessage.RESERVE
        await write_msg(stream, ok)
        await stream.close()

    relay_id: list[str] = []

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with probe_host() as relay:
            relay_id.append(str(relay.get_id()))
            relay.remove_stream_handler(IDENTIFY_ID)
            relay.set_stream_handler(HOP_ID, grant)
            addr = f"{relay.get_addrs()[0]}"
            assert f"/p2p/{relay.get_id()}" in addr
            if not with_id:
                addr = addr.split("/p2p/")[0]
            with NodeProcs(tmp_path) as procs:
                client = await trio.to_thread.run_sync(
                    lambda: relay_client(procs, "client", [addr], dcutr={"enabled": False})
                )
                resv = await trio.to_thread.run_sync(
                    lambda: wait_for(client, lambda s: s["reservations"], "reservation", 20)
                )
                return resv, client.events()

    resv, events = trio.run(main)
    assert granted, "the client never sent a RESERVE"
    assert resv[0]["relay"] == relay_id[0] and resv[0]["expires_at"] > time.time() + 3000
    found = [e for e in events if e["type"] == "relay_discovered"]
    assert found and found[0]["via"] == "dial" and found[0]["source"] == "config", found


def test_a_slow_relay_is_dialed_once_at_a_time(tmp_path: Path) -> None:
    """A configured relay that accepts TCP but never finishes the handshake (a relay too
    busy to) is dialed once at a time, each failure logged once, the next dial after the
    last one ended. The client used to start a dial every backoff (0.25 s growing to 4 s)
    while the last one still waited out its handshake: the waiting ones shared the one dial under
    way and failed with it, a burst of "unreachable" lines per real dial (seven at once at
    128 nodes) and the backoff grown once per waiting task. The stand-in relay is a socket
    that accepts and says nothing."""
    accepted: list[socket.socket] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                accepted.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    try:
        with NodeProcs(tmp_path) as procs:
            client = relay_client(procs, "client", [f"/ip4/127.0.0.1/tcp/{port}"])
            # a dial gives up after the 30 s handshake timeout, the next comes 0.25 s later
            wait_until(lambda: len(accepted) >= 2, "a second dial of the silent relay", 60)
            failures = client.log_path.read_text().count(
                f"relay /ip4/127.0.0.1/tcp/{port} unreachable"
            )
            # every logged failure is a dial that reached the relay, one at a time
            assert 1 <= failures <= len(accepted), (failures, len(accepted))
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
