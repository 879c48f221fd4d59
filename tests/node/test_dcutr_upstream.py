"""Why node/dcutr/service.py replaces py-libp2p 0.8.1's DCUtRProtocol: its retries, shown.

Spec (relay/DCUtR.md): only the peer that *received* the relayed connection initiates.
Upstream's auto-drive loop wakes every 2 s and initiates on every relayed connection in
both roles, and its 3-attempt budget is forgotten whenever the peer disconnects (so each
relayed reconnection buys 3 more). Here a probe peer runs upstream's protocol as the
*dialer* of a real circuit (relay and target are our node processes; the target has DCUtR
off, so every attempt fails and nothing upgrades): it initiates anyway, spends its budget,
and after one reconnection starts again. Our service initiates only from the receiving side,
at most dcutr.max_attempts times, then cools down (tests/node/test_dcutr*.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.host.exceptions import StreamFailure
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.dcutr import MAX_HOLE_PUNCH_ATTEMPTS, DCUtRProtocol
from libp2p.tools.anyio_service import background_trio_service
from probe import circuit, connect, probe_host

from node.overrides.auto_connector import disable_auto_connector
from testkit.procs import NodeProcs, free_port, wait_for

pytestmark = pytest.mark.loopback


async def _upstream_initiations(relay_addr: str, target_id: str) -> tuple[int, int]:
    """(initiations before, after one relayed reconnection) by upstream as circuit dialer."""
    target = ID.from_base58(target_id)
    async with probe_host() as host:
        disable_auto_connector(host)  # else the probe's swarm dials the target by itself
        relay = await connect(host, relay_addr)
        conn, status = await circuit(host, relay, target)
        assert conn is not None, f"circuit refused: {status}"
        proto = DCUtRProtocol(host)
        calls: list[float] = []
        reached = trio.Event()
        want = [MAX_HOLE_PUNCH_ATTEMPTS]
        original = proto.initiate_hole_punch

        store = host.get_peerstore()
        dead = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{free_port()}")  # refused at once

        async def counted(peer_id: ID) -> bool:  # observe upstream, change nothing but:
            # the NAT steady state: the only direct address known for the target (identify
            # taught the probe the real one) is one that does not answer
            store.clear_addrs(peer_id)
            store.add_addrs(peer_id, [dead], 3600)
            calls.append(trio.current_time())
            if len(calls) >= want[0]:
                reached.set()
            return await original(peer_id)

        proto.initiate_hole_punch = counted  # type: ignore[method-assign]
        async with background_trio_service(proto):
            with trio.move_on_after(90):
                await reached.wait()
            before = len(calls)
            # the relayed connection drops and comes back: upstream forgets its budget
            await conn.close()
            conn = await _reopen(host, relay, target)
            want[0], reached = before + 1, trio.Event()
            with trio.move_on_after(60):
                await reached.wait()
            return before, len(calls) - before


async def _reopen(host: Any, relay: ID, target: ID) -> Any:
    """A new circuit after closing the old one. Under load the relay may still be tearing
    down the old circuit's streams when the next hop stream opens, and close it before
    negotiation (CI saw StreamFailure here once): retry until 30 s have passed."""
    last: Exception | None = None
    with trio.move_on_after(30):
        while True:
            try:
                conn, status = await circuit(host, relay, target)
            except StreamFailure as exc:
                last = exc
                await trio.sleep(0.5)
                continue
            assert conn is not None, f"circuit refused: {status}"
            return conn
    raise AssertionError(f"no new circuit through the relay within 30 s: {last}")


def test_upstream_dcutr_initiates_as_dialer_and_resets_budget(tmp_path: Path) -> None:
    with NodeProcs(tmp_path) as procs:
        p2p: dict[str, Any] = {"discovery": False}
        relay = procs.start("relay", p2p=p2p, relay={"enabled": True, "mode": "server"})
        target = procs.start(
            "target",
            p2p=p2p,
            relay={"enabled": True, "mode": "client", "relay_servers": [relay.full_addr]},
            dcutr={"enabled": False},
        )
        wait_for(target, lambda s: s["reservations"], "a reservation on the relay", 30)
        before, after = trio.run(_upstream_initiations, relay.full_addr, target.peer_id)
        # the circuit dialer must never initiate (spec); upstream spends a whole budget
        assert before == MAX_HOLE_PUNCH_ATTEMPTS, f"upstream initiated {before} times"
        # ... and starts over after a reconnection
        assert after >= 1, "upstream kept its budget across the reconnection (fixed upstream?)"
        # the target saw the attempts as unsupported-protocol streams, nothing else
        st = target.status()
        assert not st["dcutr"] and not [c for c in st["connections"] if c["kind"] == "direct"
                                        and c["peer"] != relay.peer_id]  # fmt: skip
