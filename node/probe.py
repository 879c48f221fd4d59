"""A one-shot probe: a NEW libp2p host (a fresh key, nothing learnt) that reaches a peer
through a relay, the way any peer told its circuit address would, or at a direct address
(a NAT router's port forward, from outside or through the router's hairpin).

    python -m node.probe dial <relay addr>/p2p/<relay>/p2p-circuit/p2p/<peer>
    python -m node.probe identify <relay addr>/p2p/<relay>/p2p-circuit/p2p/<peer>
    python -m node.probe dial /ip4/<ip>/tcp/<port>/p2p/<peer>

`dial` connects to the relay, sends CONNECT for the peer (circuit relay v2 hop), upgrades
the relay stream to a libp2p connection (Noise, Yamux) and pings the peer over it:
`{"ok": true, "rtt_s": 0.004, "error": null, ...}`. `identify` does the same and then asks
the peer for identify over that circuit: `"listen_addrs": [...]` is what the peer tells
every peer that connects (its advertised addresses, circuit addresses included).

Shipped in the node image so the harness can run it inside any node container (`docker
exec <container> python -m node.probe ...`, harness/scenarios/actions.py probe): a dial
from behind that node's NAT, with a peer id nobody has seen. Every step is bounded; the
probe prints exactly one JSON line and exits 0 also on failure (`ok: false`, `error`),
2 on bad usage.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.connection_types import ConnectionType
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
from libp2p.host.ping import ID as PING_ID
from libp2p.identity.identify.identify import ID as IDENTIFY_ID
from libp2p.identity.identify.identify import parse_identify_response
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as PbPeer
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_ID
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from node.overrides.stream_on import open_stream_on
from node.relay.wire import read_msg, write_msg

STEP_TIMEOUT_S = 10.0  # each of: connect to the relay, CONNECT, upgrade, ping/identify
TOTAL_TIMEOUT_S = 40.0
MODES = ("dial", "identify")


class ProbeError(Exception):
    """A step failed; the message says which and why."""


def parse_direct(addr: str) -> tuple[str, ID]:
    """`<transport>/p2p/<peer>` (no circuit) -> (transport, peer)."""
    transport, sep, peer = addr.rpartition("/p2p/")
    if not sep or "/p2p-circuit" in addr or not transport:
        raise ValueError(f"not a direct address <transport>/p2p/<id>: {addr}")
    multiaddr.Multiaddr(transport)  # raises on a bad transport part
    return transport, ID.from_base58(peer)


async def _direct(host: Any, transport: str, peer: ID) -> Any:
    await _step("connect", host.connect, PeerInfo(peer, [multiaddr.Multiaddr(transport)]))
    conns = host.get_network().get_connections(peer)
    if not conns:
        raise ProbeError("connect: no connection to the peer after the dial")
    return conns[0]


def parse_circuit(addr: str) -> tuple[str, ID, ID]:
    """`<relay transport>/p2p/<relay>/p2p-circuit/p2p/<peer>` -> (transport, relay, peer)."""
    head, sep, tail = addr.partition("/p2p-circuit")
    if not sep or "/p2p/" not in head or not tail.startswith("/p2p/"):
        raise ValueError(f"not a circuit address <relay>/p2p/<id>/p2p-circuit/p2p/<id>: {addr}")
    transport, _, relay = head.rpartition("/p2p/")
    peer = tail.removeprefix("/p2p/").split("/")[0]
    multiaddr.Multiaddr(transport)  # raises on a bad transport part
    return transport, ID.from_base58(relay), ID.from_base58(peer)


async def _step(what: str, fn: Any, *args: Any) -> Any:
    try:
        with trio.fail_after(STEP_TIMEOUT_S):
            return await fn(*args)
    except trio.TooSlowError:
        raise ProbeError(f"{what}: no answer within {STEP_TIMEOUT_S:g}s") from None
    except ProbeError:
        raise
    except Exception as exc:
        raise ProbeError(f"{what}: {_said(_leaf(exc))}") from exc


async def _circuit(host: Any, transport: str, relay: ID, peer: ID) -> Any:
    await _step(
        "connect to the relay", host.connect, PeerInfo(relay, [multiaddr.Multiaddr(transport)])
    )

    async def connect() -> Any:
        s = await host.new_stream(relay, [HOP_ID])
        await write_msg(s, HopMessage(type=HopMessage.CONNECT, peer=PbPeer(id=peer.to_bytes())))
        resp = await read_msg(s, HopMessage, timeout=STEP_TIMEOUT_S)
        status = StatusCode(resp.status) if resp.HasField("status") else StatusCode.UNUSED
        if resp.type != HopMessage.STATUS or status != StatusCode.OK:
            await s.reset()
            raise ProbeError(f"CONNECT through the relay: the relay answered {status.name}")
        return s

    s = await _step("CONNECT through the relay", connect)
    addr = multiaddr.Multiaddr(f"{transport}/p2p/{relay}/p2p-circuit/p2p/{peer}")
    raw = RawConnection(s, True, connection_type=ConnectionType.RELAYED, addresses=[addr])
    return await _step("upgrade over the circuit", host.upgrade_outbound_connection, raw, peer)


async def _ping(host: Any, conn: Any) -> float:
    stream = await open_stream_on(host, conn, [PING_ID], STEP_TIMEOUT_S)
    payload = os.urandom(32)
    t0 = time.monotonic()
    await stream.write(payload)
    got = b""
    while len(got) < 32:
        chunk = await stream.read(32 - len(got))
        if not chunk:
            raise ProbeError("ping: the stream closed before the echo")
        got += chunk
    rtt = time.monotonic() - t0
    if got != payload:
        raise ProbeError("ping: the echo differs")
    await stream.close()
    return rtt


async def _identify(host: Any, conn: Any) -> list[str]:
    stream = await open_stream_on(host, conn, [IDENTIFY_ID], STEP_TIMEOUT_S)
    buf = b""
    while True:
        try:
            chunk = await stream.read(65536)
        except Exception:
            break
        if not chunk:
            break
        buf += chunk
    msg = parse_identify_response(buf)
    out = []
    for raw in msg.listen_addrs:
        try:
            out.append(str(multiaddr.Multiaddr(raw)))
        except Exception:
            out.append(f"<undecodable {raw.hex()}>")
    return out


def _leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups: what actually failed."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _said(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def probe(mode: str, addr: str) -> dict[str, Any]:
    """Run one probe; the result document (never raises for a failed step)."""
    out: dict[str, Any] = {"mode": mode, "addr": addr, "ok": False, "rtt_s": None, "error": None}
    relay: ID | None = None
    try:
        if "/p2p-circuit" in addr:
            transport, relay, peer = parse_circuit(addr)
        else:
            transport, peer = parse_direct(addr)
    except Exception as exc:
        out["error"] = str(exc)
        return out
    over = "over the circuit" if relay is not None else "over the direct connection"
    kp = create_new_key_pair()
    noise = NoiseTransport(kp, noise_privkey=create_x25519().private_key)
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    host = new_host(
        key_pair=kp, sec_opt={NOISE_ID: noise}, muxer_preference="YAMUX", listen_addrs=listen
    )
    out["probe_peer"] = str(host.get_id())
    t0 = time.monotonic()
    try:
        with trio.fail_after(TOTAL_TIMEOUT_S):
            async with host.run(listen_addrs=listen):
                if relay is not None:
                    conn = await _circuit(host, transport, relay, peer)
                else:
                    conn = await _direct(host, transport, peer)
                out["rtt_s"] = round(await _step(f"ping {over}", _ping, host, conn), 4)
                if mode == "identify":
                    out["listen_addrs"] = await _step(f"identify {over}", _identify, host, conn)
                out["ok"] = True
                with trio.move_on_after(2):
                    await conn.close()
    except Exception as exc:
        leaf = _leaf(exc)
        if isinstance(leaf, trio.TooSlowError):
            out["error"] = f"gave up after {TOTAL_TIMEOUT_S:g}s"
        elif not out["ok"]:
            out["error"] = str(leaf) if isinstance(leaf, ProbeError) else _said(leaf)
    out["duration_s"] = round(time.monotonic() - t0, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in MODES:
        print(
            f"usage: python -m node.probe {'|'.join(MODES)} <circuit or direct multiaddr>",
            file=sys.stderr,
        )
        return 2
    logging.disable(logging.CRITICAL)  # stdout carries the one JSON line, nothing else
    result = trio.run(probe, args[0], args[1])
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
