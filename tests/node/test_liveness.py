"""Connection liveness (node/liveness.py) on real node processes over loopback.

A frozen process (SIGSTOP) is what a silent partition looks like from the other side:
its kernel still ACKs TCP, nothing answers. The other node must close the connection
(connection_closed reason=ping_timeout) and get it back once the peer runs again.
Short ping intervals via [p2p] config; every wait polls a condition with a deadline.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.host.ping import ID as PING_ID
from probe import probe_host

from testkit.chain import validator_configs
from testkit.procs import NodeProc, NodeProcs, wait_for, wait_until

pytestmark = pytest.mark.loopback

PING = {"ping_interval_s": 0.5, "ping_timeout_s": 2.0, "ping_failures": 3}


def pair(procs: NodeProcs) -> tuple[NodeProc, NodeProc]:
    """b, then a with b as persistent peer (a redials it); both ping fast."""
    b = procs.start("b", p2p={"discovery": False, **PING})
    a = procs.start("a", p2p={"discovery": False, "persistent_peers": [b.full_addr], **PING})
    return a, b


def conn_to(node: NodeProc, peer: str) -> Any:
    return lambda s: next((c for c in s["connections"] if c["peer"] == peer), None)


def closes(node: NodeProc, peer: str) -> list[dict[str, Any]]:
    return [e for e in node.events() if e["type"] == "connection_closed" and e["peer"] == peer]


def test_frozen_peer_is_closed_with_ping_timeout_and_comes_back(tmp_path: Path) -> None:
    with NodeProcs(tmp_path) as procs:
        a, b = pair(procs)
        b_id = b.peer_id
        first = wait_for(a, conn_to(a, b_id), "connection to b", 20)
        wait_for(a, lambda s: conn_to(a, b_id)(s)["pings_ok"] >= 1, "a first ping", 20)
        assert b.proc is not None
        b.proc.send_signal(signal.SIGSTOP)
        try:
            closed = wait_until(
                lambda: [e for e in closes(a, b_id) if e.get("reason") == "ping_timeout"],
                "connection_closed reason=ping_timeout on a",
                timeout=40,
            )
            assert closed[0]["remote_addr"] == first["remote_addr"]
            assert (
                not conn_to(a, b_id)(a.status())
                or conn_to(a, b_id)(a.status())["opened_at"] > first["opened_at"]
            )
            assert a.metric("sentrynet_ping_failures_total", kind="direct") >= 3
        finally:
            b.proc.send_signal(signal.SIGCONT)
        # persistent peer redial: a fresh connection that answers pings again
        back = wait_for(
            a,
            lambda s: (
                (c := conn_to(a, b_id)(s))
                and c["opened_at"] > first["opened_at"]
                and c["pings_ok"] >= 1
                and c
            ),
            "a new connection to b answering pings after SIGCONT",
            60,
        )
        assert back["ping_failures"] == 0


def test_quiet_connection_is_pinged_by_one_end_and_reports_rtt(tmp_path: Path) -> None:
    """Nothing but pings on the connection: each end pings at its first look (an RTT on
    both), then the pings of one end are what the other hears, so that one does not ping
    as well; ten intervals later the connection is the same one, nothing closed."""
    with NodeProcs(tmp_path) as procs:
        a, b = pair(procs)
        b_id, a_id = b.peer_id, a.peer_id
        first = wait_for(a, conn_to(a, b_id), "connection to b", 20)

        def pings() -> int:
            rows = [conn_to(a, b_id)(a.status()), conn_to(b, a_id)(b.status())]
            return sum(r["pings_ok"] for r in rows if r)

        wait_until(lambda: pings() >= 10, "10 pings answered on the connection", 40)
        row = conn_to(a, b_id)(a.status())
        other = conn_to(b, a_id)(b.status())
        assert row["opened_at"] == first["opened_at"]
        assert row["pings_ok"] >= 1 and other["pings_ok"] >= 1, (row, other)
        assert closes(a, b_id) == [] and closes(b, a_id) == []
        # one end heard the other's pings instead of pinging itself
        skipped = a.status()["liveness"]["skipped"] + b.status()["liveness"]["skipped"]
        assert skipped >= 3, skipped
        # RTT in /status and in the histogram
        assert 0 < row["rtt_s"] < 2.0 and 0 < row["rtt_median_s"] < 2.0
        assert row["ping_failures"] == 0
        assert a.metric("sentrynet_ping_rtt_seconds_count", kind="direct") >= row["pings_ok"]
        assert a.status()["liveness"]["closed"] == 0


def test_busy_connection_is_not_pinged_until_its_rtt_is_due(tmp_path: Path) -> None:
    """Two validators gossip several times a second: whatever arrives shows the peer is
    alive, so after the first look's ping neither end pings the connection until
    RTT_REFRESH_S has passed."""
    from node.liveness import RTT_REFRESH_S

    with NodeProcs(tmp_path) as procs:
        nodes, ids = validator_configs(procs, ["v0", "v1"], 0.3, discovery=False, p2p=PING)
        for node in nodes:
            procs.launch(node)
        v0 = nodes[0]
        # the chain runs once the nodes have settled (seconds): the connection is busy
        wait_for(v0, lambda s: s["chain"]["height"] >= 2, "the chain's gossip flowing", 60)
        before = v0.status()
        row = conn_to(v0, ids["v1"])(before)
        assert row is not None and row["pings_ok"] >= 1 and row["rtt_s"] > 0, row
        start = time.monotonic()
        wait_for(
            v0,
            lambda s: s["liveness"]["skipped"] >= before["liveness"]["skipped"] + 10,
            "10 more looks without a ping",
            40,
        )
        after = conn_to(v0, ids["v1"])(v0.status())
        # ten intervals: ten pings on a connection pinged every interval; here at most
        # the RTT refresh, if the last ping was close to RTT_REFRESH_S ago
        assert after["pings_ok"] <= row["pings_ok"] + 1, (row, after)
        assert time.monotonic() - start < RTT_REFRESH_S
        assert after["opened_at"] == row["opened_at"] and after["ping_failures"] == 0
        assert closes(v0, ids["v1"]) == [] and v0.status()["liveness"]["closed"] == 0


def relay_node(procs: NodeProcs, name: str, ping: dict[str, Any] | None = None) -> NodeProc:
    return procs.start(
        name,
        node={"role": "sentry"},
        relay={"enabled": True, "mode": "server"},
        p2p={"discovery": False, **(PING if ping is None else ping)},
    )


def test_client_fails_over_when_its_relay_goes_silent(tmp_path: Path) -> None:
    """The relay holding our reservation freezes: the client closes that connection for
    ping_timeout, drops the reservation and reserves on the other relay."""
    with NodeProcs(tmp_path) as procs:
        r1, r2 = relay_node(procs, "r1"), relay_node(procs, "r2")
        client = procs.start(
            "client",
            relay={
                "enabled": True,
                "mode": "client",
                "relay_servers": [r1.p2p_addr, r2.p2p_addr],
                "max_reservations_held": 1,
            },
            p2p={"discovery": False, **PING},
        )
        held = wait_for(client, lambda s: s["reservations"], "a reservation", 20)[0]["relay"]
        frozen, other = (r1, r2) if held == r1.peer_id else (r2, r1)
        other_id = other.peer_id
        wait_for(client, lambda s: conn_to(client, other_id)(s), "connection to the other relay")
        assert frozen.proc is not None
        frozen.proc.send_signal(signal.SIGSTOP)
        try:
            wait_for(
                client,
                lambda s: [r for r in s["reservations"] if r["relay"] == other_id],
                "reservation on the other relay after the held one froze",
                45,
            )
            evs = client.events()
            assert any(
                e["type"] == "connection_closed"
                and e["peer"] == held
                and e.get("reason") == "ping_timeout"
                for e in evs
            ), [e for e in evs if e["type"] == "connection_closed"]
            assert any(e["type"] == "reservation_expired" and e["relay"] == held for e in evs)
            assert all(r["relay"] != held for r in client.status()["reservations"])
        finally:
            frozen.proc.send_signal(signal.SIGCONT)


def test_relayed_connection_to_frozen_peer_is_closed(tmp_path: Path) -> None:
    """Pings run on relayed connections too: a frozen target's circuit is closed with
    ping_timeout while the relay itself (alive) keeps its direct connection. The relay
    pings at the default (slow) pace, else it would notice the frozen target first and
    the circuit would close under the dialer for that reason instead."""
    with NodeProcs(tmp_path) as procs:
        relay = relay_node(procs, "relay", ping={})
        target = procs.start(
            "target",
            relay={"enabled": True, "mode": "client", "relay_servers": [relay.p2p_addr]},
            p2p={"discovery": False, **PING},
            dcutr={"enabled": False},
        )
        wait_for(target, lambda s: s["reservations"], "target reservation", 20)
        target_id = target.peer_id
        dead = f"/ip4/127.0.0.1/tcp/9/p2p/{target_id}"  # only a circuit reaches it
        dialer = procs.start(
            "dialer",
            relay={
                "enabled": True,
                "mode": "client",
                "relay_servers": [f"{relay.p2p_addr}/p2p/{relay.peer_id}"],
            },
            p2p={"discovery": False, "persistent_peers": [dead], **PING},
            dcutr={"enabled": False},
        )
        row = wait_for(
            dialer,
            lambda s: (
                (c := conn_to(dialer, target_id)(s))
                and c["kind"] == "relayed"
                and c["pings_ok"] >= 1
                and c
            ),
            "relayed connection answering pings",
            40,
        )
        assert row["rtt_s"] is not None
        assert dialer.metric("sentrynet_ping_rtt_seconds_count", kind="relayed") >= 1
        assert target.proc is not None
        target.proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(
                lambda: [
                    e
                    for e in closes(dialer, target_id)
                    if e["kind"] == "relayed" and e.get("reason") == "ping_timeout"
                ],
                "relayed connection_closed reason=ping_timeout on the dialer",
                timeout=40,
            )
            relay_id = relay.peer_id
            assert conn_to(dialer, relay_id)(dialer.status())["kind"] == "direct"
            assert not [e for e in closes(dialer, relay_id) if e.get("reason") == "ping_timeout"]
        finally:
            target.proc.send_signal(signal.SIGCONT)


def test_a_ping_refused_at_once_waits_its_interval(tmp_path: Path) -> None:
    """A peer that accepts the ping protocol and ends the stream at once (seen from busy
    sentries at 64 nodes: StreamEOF within milliseconds). Its answer to the negotiation is
    data from the peer, so the node rightly calls the peer slow but alive; it must still
    wait its interval before the next ping. Before, it pinged again at once: 36 ping
    streams in 6 s to one peer, each a stream negotiation on both ends, on a machine that
    was already short of CPU."""
    interval = 1.0
    opened: list[float] = []

    async def refuse(stream: Any) -> None:
        opened.append(time.monotonic())
        await stream.close()

    async def main() -> tuple[list[float], dict[str, Any]]:
        async with probe_host() as peer:
            peer.set_stream_handler(PING_ID, refuse)
            addr = str(peer.get_addrs()[0])
            with NodeProcs(tmp_path) as procs:
                node = await trio.to_thread.run_sync(
                    lambda: procs.start(
                        "n",
                        p2p={
                            "discovery": False,
                            "persistent_peers": [addr],
                            **PING,
                            "ping_interval_s": interval,
                        },
                    )
                )
                await trio.to_thread.run_sync(
                    lambda: wait_until(lambda: len(opened) >= 3, "three pings to the peer", 30)
                )
                window_start = time.monotonic()
                await trio.sleep(6 * interval)  # the window over which pings are counted
                in_window = [t for t in opened if t >= window_start]
                return in_window, node.status()

    in_window, status = trio.run(main)
    # one ping per interval (spread by the jitter) over six intervals, not one per round trip
    assert 3 <= len(in_window) <= 9, f"{len(in_window)} pings in 6 intervals"
    assert status["liveness"]["closed"] == 0
