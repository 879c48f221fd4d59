"""Dial every direct address of a peer, not just one.

Upstream (py-libp2p 0.8.1, Swarm.dial_peer, "Smart Address Selection") keeps at most one
address per transport class (MAX_ADDRS_PER_PEER = 2, "at most 1 per class"): of a peer's
TCP addresses only the first is ever dialed. A dual-homed sentry advertises a private and
a public TCP address; a node in the other network gets the private one first, cannot
reach it, and upstream never tries the public one. We dial each address ourselves
(`Swarm.dial_addr`), all at once, and keep the first connection that comes up. Dials that
also succeed before the others are cancelled (a peer reachable at two addresses) are
closed: one connection per dial (node/runtime.duplicates keeps the same, oldest, one).
Callers go through node/dialing.NodeDialer, which runs one such dial per peer at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import multiaddr
import trio
from libp2p.abc import IHost, INetConn
from libp2p.peer.id import ID

from node.overrides.raw_dial import attach, dial_raw

UPGRADE_TIMEOUT_S = 30.0


async def dial_any(
    host: IHost,
    peer: ID,
    addrs: list[multiaddr.Multiaddr],
    timeout: float,
    order: Callable[[INetConn], int] | None = None,
    upgrade_timeout: float = UPGRADE_TIMEOUT_S,
) -> INetConn:
    """Dial all `addrs` of `peer` concurrently; return the first connection (by `order`,
    e.g. registration order, else completion order) and close any other that came up, or
    raise ConnectionError naming every address and why it failed.

    `timeout` bounds the TCP connect (an unreachable address must not stall the caller);
    a connected socket then gets `upgrade_timeout` for Noise + Yamux, which takes several
    seconds on a loaded machine (cutting it short wastes both sides' work)."""
    errors: dict[str, str] = {}
    won: list[INetConn] = []
    host.get_peerstore().add_addrs(peer, addrs, 3600)

    async def one(addr: multiaddr.Multiaddr, cancel: trio.CancelScope) -> None:
        stage = "connect"
        try:
            with trio.fail_after(timeout):
                raw = await dial_raw(host, addr, peer=peer)
            stage = "upgrade"
            with trio.fail_after(upgrade_timeout):
                conn = await attach(host, raw, peer)
        except Exception as exc:
            if isinstance(exc, trio.TooSlowError):
                limit = timeout if stage == "connect" else upgrade_timeout
                errors[str(addr)] = f"no {stage} within {limit}s"
            else:
                cause = exc.__cause__ or exc
                errors[str(addr)] = f"{type(cause).__name__}: {cause}"[:200]
            return
        won.append(conn)
        cancel.cancel()

    with trio.move_on_after(timeout + upgrade_timeout) as scope:
        async with trio.open_nursery() as n:
            for a in addrs:
                n.start_soon(one, a, n.cancel_scope)
    if won:
        if order is not None:
            won.sort(key=order)
        for extra in won[1:]:
            with contextlib.suppress(Exception):
                await extra.close()
        return won[0]
    if scope.cancelled_caught:
        for a in addrs:
            errors.setdefault(str(a), f"no answer within {timeout + upgrade_timeout}s")
    detail = "; ".join(f"{a} -> {e}" for a, e in errors.items())
    raise ConnectionError(f"{peer}: {detail or 'no addresses'}")
