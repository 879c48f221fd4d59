"""Which connection a relay opens a circuit's STOP stream on, when the target has several.

After a NAT rebind the target's old connection to the relay is dead while the relay cannot
know it yet, and the target reserves again on a new one (scenario nat-rebind). Upstream's
`host.new_stream` takes the first connection in the swarm's list, the oldest: every
circuit to the target then timed out on the dead one until liveness closed it (the
scenario's fresh dial failed 3 s after the rebind). Our relay (node/relay/server.py
`_stop_conn`) opens the STOP stream on the connection the target's latest RESERVE came on.

Here a probe peer opens two real connections to a relay node process, reserves on the
second, and answers STOP; a second probe sends CONNECT for it. The STOP must arrive on the
second connection; after a RESERVE on the first, on the first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, StopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as PbPeer
from probe import HOP_ID, STOP_ID, connect, probe_host

from node.overrides.raw_dial import dial_raw
from node.overrides.stream_on import open_stream_on
from node.relay.wire import encode, read_msg
from testkit.procs import NodeProcs

pytestmark = pytest.mark.loopback


async def _reserve_on(host: Any, conn: Any) -> int:
    s = await open_stream_on(host, conn, [HOP_ID], 10)
    await s.write(encode(HopMessage(type=HopMessage.RESERVE)))
    resp = await read_msg(s, HopMessage, timeout=10)
    await s.close()
    return int(resp.status)


async def _connect_through(relay_addr: str, relay: ID, target: ID) -> int:
    """A second peer asks the relay for a circuit to target; the relay's status code."""
    async with probe_host() as dialer:
        await connect(dialer, relay_addr)
        with trio.fail_after(20):
            s = await dialer.new_stream(relay, [HOP_ID])
            await s.write(
                encode(HopMessage(type=HopMessage.CONNECT, peer=PbPeer(id=target.to_bytes())))
            )
            resp = await read_msg(s, HopMessage, timeout=15)
        await s.reset()
        return int(resp.status)


async def _stop_lands(relay_addr: str) -> tuple[bool, bool]:
    """(STOP on the 2nd connection after reserving there, on the 1st after reserving there)."""
    async with probe_host() as host:
        relay = await connect(host, relay_addr)  # connection 1 (the oldest)
        first = host.get_network().get_connections(relay)[0]
        tcp = multiaddr.Multiaddr(relay_addr.split("/p2p/")[0])
        with trio.fail_after(10):
            raw = await dial_raw(host, tcp)
            second = await host.upgrade_outbound_connection(raw, relay)
        assert len(host.get_network().get_connections(relay)) == 2
        landed: list[Any] = []

        async def on_stop(stream: Any) -> None:
            landed.append(stream.muxed_conn)
            await read_msg(stream, StopMessage, timeout=10)
            await stream.write(encode(StopMessage(type=StopMessage.STATUS, status=100)))

        host.set_stream_handler(STOP_ID, on_stop)
        assert await _reserve_on(host, second) == 100
        assert await _connect_through(relay_addr, relay, host.get_id()) == 100
        on_second = bool(landed) and landed[-1] is second.muxed_conn
        assert await _reserve_on(host, first) == 100
        assert await _connect_through(relay_addr, relay, host.get_id()) == 100
        on_first = len(landed) == 2 and landed[-1] is first.muxed_conn
        return on_second, on_first


def test_stop_goes_on_the_connection_of_the_latest_reservation(tmp_path: Path) -> None:
    with NodeProcs(tmp_path) as procs:
        relay = procs.start(
            "relay",
            node={"role": "sentry"},
            p2p={"discovery": False},
            relay={"enabled": True, "mode": "server"},
        )
        on_second, on_first = trio.run(_stop_lands, relay.full_addr)
    assert on_second, "STOP did not arrive on the connection the reservation was made on"
    assert on_first, "STOP did not follow the reservation to the other connection"
