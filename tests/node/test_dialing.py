"""One connection per peer: the node's single-flight dialer and duplicate rule, on real
py-libp2p hosts over loopback sockets (no mocks).

Each "node" here is a bare host with the node's own ConnectionTracker and NodeDialer
attached exactly as node/app.py attaches them (Swarm.dial_peer routed to the dialer).
"""

from __future__ import annotations

import contextlib
import io
import os
import types
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
from libp2p.host.ping import ID as PING_ID
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service

from node.dialing import NodeDialer
from node.events import EventLog
from node.host import build_pubsub
from node.metrics import Metrics
from node.overrides.dial_peer import route_dial_peer
from node.overrides.multi_addr_dial import dial_any
from node.overrides.no_redial import install_pubsub_no_redial
from node.runtime import ConnectionTracker

pytestmark = pytest.mark.loopback


@asynccontextmanager
async def node_host(*ips: str) -> AsyncIterator[tuple[IHost, NodeDialer, ConnectionTracker]]:
    """A host listening on every ip (one port each), with the node's tracker + dialer."""
    kp = create_new_key_pair()
    noise = NoiseTransport(kp, noise_privkey=create_x25519().private_key)
    listen = [multiaddr.Multiaddr(f"/ip4/{ip}/tcp/0") for ip in ips or ("127.0.0.1",)]
    host = new_host(
        key_pair=kp, sec_opt={NOISE_ID: noise}, muxer_preference="YAMUX", listen_addrs=listen
    )
    tracker = ConnectionTracker(EventLog(f"t{os.getpid()}", stream=io.StringIO()), Metrics())
    tracker.local_peer = host.get_id()
    host.get_network().register_notifee(tracker)
    dialer = NodeDialer(host, tracker)
    async with host.run(listen_addrs=listen), trio.open_nursery() as nursery:
        tracker.nursery = nursery
        rt: Any = types.SimpleNamespace(
            nursery=nursery, services={}, peer_id=host.get_id(), relay_client=None
        )
        dialer.bind(rt)
        route_dial_peer(host, dialer)
        yield host, dialer, tracker
        nursery.cancel_scope.cancel()


def n_conns(host: IHost, peer: ID) -> int:
    return len([c for c in host.get_network().get_connections(peer) if not c.is_closed])


async def settle(cond: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll until cond() holds (closing duplicates is asynchronous)."""
    with trio.move_on_after(timeout):
        while not cond():
            await trio.sleep(0.05)
    assert cond(), f"timed out waiting for {what}"


def test_concurrent_connects_make_one_connection() -> None:
    """30 callers at once (dialer.connect, host.connect, host.new_stream — the paths
    discovery, the relay client and chain sync use) to a peer with two addresses: one
    dial, one connection on both sides."""

    async def scenario() -> tuple[int, int, int, int]:
        async with (
            node_host() as (a, dialer, _),
            node_host("127.0.0.1", "127.0.0.2") as (
                b,
                _,
                _,
            ),
        ):
            bid = b.get_id()
            addrs = list(b.get_transport_addrs())
            assert len(addrs) == 2
            a.get_peerstore().add_addrs(bid, addrs, 3600)
            conns: list[Any] = []

            async def via_dialer() -> None:
                conns.append(await dialer.connect(bid))

            async def via_host_connect() -> None:
                await a.connect(PeerInfo(bid, addrs))

            async def via_new_stream() -> None:
                # the dial is what counts here; protocol negotiation on a brand-new
                # connection under 10 concurrent streams fails now and then upstream
                # too (py-libp2p 0.8.1, also with one connection), so a failed
                # negotiation is not this test's business
                with contextlib.suppress(Exception):
                    s = await a.new_stream(bid, [PING_ID])
                    await s.reset()

            with trio.fail_after(30):
                async with trio.open_nursery() as n:
                    for i in range(30):
                        n.start_soon((via_dialer, via_host_connect, via_new_stream)[i % 3])
            await settle(lambda: n_conns(b, a.get_id()) == 1, "b to see one connection")
            return (
                n_conns(a, bid),
                n_conns(b, a.get_id()),
                dialer.dials_started,
                len({id(c) for c in conns}),
            )

    on_a, on_b, dials, distinct = trio.run(scenario)
    assert (on_a, on_b) == (1, 1)
    assert dials == 1
    assert distinct == 1  # every dialer.connect caller got the same connection


def test_peer_at_two_addresses_ends_with_one_connection() -> None:
    """dial_any dials both addresses at once; whatever comes up, one connection stays."""

    async def scenario() -> tuple[int, int]:
        async with (
            node_host() as (a, _, tracker),
            node_host("127.0.0.1", "127.0.0.2") as (
                b,
                _,
                _,
            ),
        ):
            bid = b.get_id()
            addrs = list(b.get_transport_addrs())
            conn = await dial_any(a, bid, addrs, 10, order=lambda c: tracker.info(c).seq)  # type: ignore[union-attr]
            await settle(lambda: n_conns(b, a.get_id()) == 1, "b to see one connection")
            assert not conn.is_closed
            return n_conns(a, bid), n_conns(b, a.get_id())

    assert trio.run(scenario) == (1, 1)


def test_cross_dial_keeps_the_connection_dialed_by_the_smaller_peer_id() -> None:
    """Both sides dial each other at the same moment: each ends with one connection, the
    same one on both sides (dialed by the smaller peer id)."""

    async def scenario() -> tuple[int, int, str, str, str]:
        async with node_host() as (a, _, ta), node_host() as (b, _, tb):
            aid, bid = a.get_id(), b.get_id()
            with trio.fail_after(30):
                async with trio.open_nursery() as n:
                    # each side's own dial, at once: a true cross-dial (no single flight
                    # can prevent it; the duplicate rule resolves it)
                    n.start_soon(dial_any, a, bid, list(b.get_transport_addrs()), 10.0)
                    n.start_soon(dial_any, b, aid, list(a.get_transport_addrs()), 10.0)
            assert ta.for_peer(bid) or tb.for_peer(aid)
            await settle(
                lambda: n_conns(a, bid) == 1 and n_conns(b, aid) == 1,
                "one connection on each side",
            )
            smaller = aid if aid.to_bytes() < bid.to_bytes() else bid
            (ca,) = ta.for_peer(bid)
            (cb,) = tb.for_peer(aid)
            dialer_a = aid if ca.direction == "outbound" else bid
            dialer_b = bid if cb.direction == "outbound" else aid
            return n_conns(a, bid), n_conns(b, aid), str(dialer_a), str(dialer_b), str(smaller)

    on_a, on_b, dialer_a, dialer_b, smaller = trio.run(scenario)
    assert (on_a, on_b) == (1, 1)
    assert dialer_a == dialer_b == smaller


def test_pubsub_registration_of_a_peer_no_longer_connected_does_not_dial() -> None:
    """Upstream pubsub (py-libp2p 0.8.1) registers a new peer by `new_stream`, retried after
    a back-off while it thinks the peer is still connected; `new_stream` to a peer that
    has gone meanwhile dials it. A node that closed a peer for its budget redialed it
    every 0.5 s (node/overrides/no_redial.py). With the override the registration fails
    as upstream's retry expects (SwarmException) and nothing is dialed."""

    async def scenario(override: bool) -> tuple[int, int, str]:
        async with node_host() as (a, dialer, _), node_host() as (b, _, _):
            bid = b.get_id()
            a.get_peerstore().add_addrs(bid, list(b.get_transport_addrs()), 3600)
            pubsub, router = build_pubsub(a)
            if override:
                install_pubsub_no_redial(pubsub)
            error = ""
            async with background_trio_service(pubsub), background_trio_service(router):
                await pubsub.wait_until_ready()
                try:
                    with trio.fail_after(15):
                        await pubsub._handle_new_peer(bid)
                except SwarmException as exc:
                    error = str(exc)
                except Exception as exc:  # b runs no pubsub: upstream's dial, then this
                    error = f"after the dial: {exc}"
                return n_conns(a, bid), dialer.dials_started, error

    assert trio.run(scenario, False)[:2] == (1, 1)  # upstream dialed the peer
    conns, dials, error = trio.run(scenario, True)
    assert (conns, dials) == (0, 0)
    assert "pubsub peer registration does not dial" in error
