"""An in-test libp2p peer ("probe") for poking nodes over real sockets.

The probe is a bare py-libp2p host (TCP, Noise, Yamux) run inside the test under trio.
It speaks hop/stop by hand so tests can (a) send exact, also malformed, frames to a
node, (b) be a circuit dialer whose bytes they control, and (c) ping a target through
a circuit to show data flowing both ways.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.connection_types import ConnectionType
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
from libp2p.host.ping import ID as PING_ID
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, StopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as PbPeer
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_ID
from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID as STOP_ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from node.relay.wire import encode, read_msg

__all__ = [
    "HOP_ID",
    "STOP_ID",
    "HopMessage",
    "StopMessage",
    "circuit",
    "connect",
    "exchange",
    "ping",
    "probe_host",
    "reserve",
]


@asynccontextmanager
async def probe_host(ip: str = "127.0.0.1") -> AsyncIterator[IHost]:
    kp = create_new_key_pair()
    noise = NoiseTransport(kp, noise_privkey=create_x25519().private_key)
    listen = [multiaddr.Multiaddr(f"/ip4/{ip}/tcp/0")]
    host = new_host(
        key_pair=kp, sec_opt={NOISE_ID: noise}, muxer_preference="YAMUX", listen_addrs=listen
    )
    async with host.run(listen_addrs=listen):
        yield host


async def connect(host: IHost, full_addr: str) -> ID:
    info = info_from_p2p_addr(multiaddr.Multiaddr(full_addr))
    with trio.fail_after(10):
        await host.connect(info)
    return info.peer_id


async def exchange(
    host: IHost,
    peer: ID,
    protocol: str,
    payload: bytes,
    close_write: bool = True,
    timeout: float = 15,
) -> bytes:
    """Open a stream, send raw bytes, half-close, read everything until EOF/reset."""
    with trio.fail_after(timeout):
        s = await host.new_stream(peer, [protocol])  # type: ignore[list-item]
        await s.write(payload)
        if close_write:
            await s.close()
        buf = b""
        while True:
            try:
                chunk = await s.read(65536)
            except StreamEOF:
                break
            except Exception:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def decode_hop(data: bytes) -> HopMessage | None:
    """Parse the first delimited HopMessage in data (None when there is none)."""
    if not data:
        return None
    n, shift, i = 0, 0, 0
    while True:
        b = data[i]
        n |= (b & 0x7F) << shift
        shift += 7
        i += 1
        if not b & 0x80:
            break
    msg = HopMessage()
    msg.ParseFromString(data[i : i + n])
    return msg


def decode_stop(data: bytes) -> StopMessage | None:
    if not data:
        return None
    n, shift, i = 0, 0, 0
    while True:
        b = data[i]
        n |= (b & 0x7F) << shift
        shift += 7
        i += 1
        if not b & 0x80:
            break
    msg = StopMessage()
    msg.ParseFromString(data[i : i + n])
    return msg


async def reserve(host: IHost, relay: ID) -> HopMessage | None:
    msg = HopMessage(type=HopMessage.RESERVE)
    return decode_hop(await exchange(host, relay, HOP_ID, encode(msg)))


async def circuit(host: IHost, relay: ID, target: ID) -> tuple[INetConn | None, int]:
    """CONNECT to target through relay and upgrade; (connection, relay status code)."""
    with trio.fail_after(15):
        s: INetStream = await host.new_stream(relay, [HOP_ID])
        await s.write(
            encode(HopMessage(type=HopMessage.CONNECT, peer=PbPeer(id=target.to_bytes())))
        )
        resp = await read_msg(s, HopMessage)
    if resp.status != 100:
        await s.reset()
        return None, int(resp.status)
    addr = multiaddr.Multiaddr(f"/p2p/{relay}/p2p-circuit/p2p/{target}")
    raw = RawConnection(s, True, connection_type=ConnectionType.RELAYED, addresses=[addr])
    with trio.fail_after(15):
        conn = await host.upgrade_outbound_connection(raw, target)
    return conn, 100


async def ping(conn: INetConn, rounds: int = 3) -> list[bytes]:
    """Ping over this very connection: 32 random bytes out, the same 32 back, per round."""
    with trio.fail_after(15):
        muxed = await conn.new_stream()
        # negotiate ping by multistream-select over the raw muxed stream
        from libp2p.protocol_muxer.multiselect_client import MultiselectClient
        from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator

        await MultiselectClient().select_one_of([PING_ID], MultiselectCommunicator(muxed))
        echoed = []
        for _ in range(rounds):
            payload = os.urandom(32)
            await muxed.write(payload)
            got = b""
            while len(got) < 32:
                got += await muxed.read(32 - len(got))
            assert got == payload, "ping echo differs"
            echoed.append(got)
        await muxed.close()
    return echoed


__all__ += ["PeerInfo", "decode_hop", "decode_stop"]
