"""Reach a peer: direct addresses first; when none answers, a circuit through a relay.
One dial per peer at a time, and none at all while we are connected.

py-libp2p's swarm drops `/p2p-circuit` addresses when dialing (Swarm.dial_peer filters
them: "this node has no relay transport"), so `host.connect()` can never use one. We dial
circuits ourselves (node/relay/stop.py: CONNECT only, no RESERVE), from addresses learnt
through identify / the peer store, else through any relay we hold a reservation on or
know as a candidate.

Single flight: discovery, the relay client, chain sync, peer exchange and DCUtR all want
connections to the same peers at the same moments. Every dial goes through here
(`Swarm.dial_peer` is routed here too, node/overrides/dial_peer.py): a connected peer's
existing connection is returned (any kind; direct preferred), and concurrent callers
await the one dial in flight for that peer (or address, for addresses without a peer
id). The dial runs in the node's nursery, so a caller that gives up (its own timeout)
does not cancel it for the others. Connections that still pile up (the peer dialed us at
the same moment) are closed by the rule in node/runtime.duplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetConn
from libp2p.peer.id import ID

from node.overrides.dial_unknown import dial_unknown_peer
from node.overrides.multi_addr_dial import dial_any
from node.relay.stop import CircuitError, dial_circuit
from node.runtime import ConnectionTracker, NodeRuntime

log = logging.getLogger("sentrynet.dialing")

DIRECT_TIMEOUT_S = 3.0  # TCP connect, then the circuit (the handshake gets its own 30 s)
RELAY_CONNECT_TIMEOUT_S = 5.0
UNKNOWN_TIMEOUT_S = 5.0


def split_circuit(addr: multiaddr.Multiaddr | str) -> tuple[str, ID] | None:
    """`<relay transport>/p2p/<relay>/p2p-circuit[/p2p/<peer>]` -> (relay transport, relay)."""
    s = str(addr)
    if "/p2p-circuit" not in s:
        return None
    head = s.split("/p2p-circuit")[0]
    if "/p2p/" not in head:
        return None
    transport, _, rid = head.rpartition("/p2p/")
    try:
        return transport, ID.from_base58(rid)
    except Exception:
        return None


class DialError(ConnectionError):
    pass


@dataclass
class _Flight:
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: BaseException | None = None


class NodeDialer:
    def __init__(self, host: IHost, tracker: ConnectionTracker) -> None:
        self.host = host
        self.tracker = tracker
        self.rt: NodeRuntime | None = None
        self._flights: dict[tuple[str, str], _Flight] = {}
        self._circuits: dict[str, int] = {}  # peer -> circuit dials to it under way
        self.dials_started = 0  # direct/address/circuit dials really made (not joined)

    def bind(self, rt: NodeRuntime) -> None:
        """Run dials in the runtime's nursery from now on (inline before)."""
        self.rt = rt

    # -- single flight --
    def circuit_in_flight(self, peer: ID) -> bool:
        """A circuit to peer is being opened (its CONNECT through a relay under way). Only
        such a dial can bring a second relayed connection to a peer that has reached us
        through a relay: a direct dial that fails falls back to the connection already
        there (_try_relayed), one that succeeds is direct."""
        return self._circuits.get(str(peer), 0) > 0

    async def _single_flight(self, key: tuple[str, str], fn: Callable[[], Awaitable[Any]]) -> Any:
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight()
            self._flights[key] = flight
            f = flight

            async def run() -> None:
                try:
                    f.result = await fn()
                except Exception as exc:
                    f.error = exc
                finally:
                    if f.result is None and f.error is None:
                        f.error = DialError("dial cancelled")
                    self._flights.pop(key, None)
                    f.done.set()

            if self.rt is not None:
                self.rt.nursery.start_soon(run)
            else:
                await run()
        await flight.done.wait()
        if flight.error is not None:
            if isinstance(flight.error, DialError):
                raise DialError(str(flight.error)) from flight.error
            raise DialError(f"{type(flight.error).__name__}: {flight.error}") from flight.error
        return flight.result

    def usable(self, conn: INetConn) -> bool:
        if self.tracker.info(conn) is None and not conn.is_closed:
            self.tracker.on_connected(conn)  # judged now, not when its notifee runs
        return self.tracker.is_live(conn)

    def existing(self, peer: ID) -> list[INetConn]:
        return sorted((c.conn for c in self.tracker.for_peer(peer)), key=self.preference)

    def preference(self, conn: INetConn) -> tuple[bool, int]:
        return self.tracker.preference(conn)

    def _settled(self, peer: ID, conn: INetConn) -> INetConn:
        """The connection that survives duplicate closing (ours, or the peer's dial)."""
        best = self.tracker.best(peer)
        return best.conn if best is not None else conn

    def _order(self, conn: INetConn) -> int:
        info = self.tracker.info(conn)
        return info.seq if info is not None else 1 << 62

    # -- addresses --
    def addrs(self, peer: ID) -> tuple[list[multiaddr.Multiaddr], list[multiaddr.Multiaddr]]:
        """(direct, circuit) addresses the peer store has for peer."""
        try:
            all_addrs = list(self.host.get_peerstore().addrs(peer))
        except Exception:
            all_addrs = []
        direct = [a for a in all_addrs if "/p2p-circuit" not in str(a)]
        circuit = [a for a in all_addrs if "/p2p-circuit" in str(a)]
        return direct, circuit

    # -- public --
    async def connect(self, peer_id: ID) -> INetConn:
        """A connection to peer_id: the existing one, else direct first, then circuits.
        Raises DialError naming every attempt."""
        best = self.tracker.best(peer_id)
        if best is not None:
            return best.conn
        conn = await self._single_flight(("any", str(peer_id)), lambda: self._connect(peer_id))
        return self._settled(peer_id, conn)

    async def _connect(self, peer_id: ID) -> INetConn:
        errors: list[str] = []
        conn = await self._try_direct(peer_id, errors)
        if conn is None:
            conn = await self._try_relayed(peer_id, errors)
        if conn is None:
            raise DialError(f"cannot reach {peer_id}: " + "; ".join(errors or ["no addresses"]))
        return conn

    async def dial_direct(
        self,
        peer_id: ID,
        addrs: list[multiaddr.Multiaddr] | None = None,
        timeout: float = DIRECT_TIMEOUT_S,
    ) -> INetConn:
        """A direct connection to peer_id (existing, or the one direct dial in flight).
        `addrs` are added to the peer store first; every direct address is dialed at once."""
        for c in sorted(self.tracker.for_peer(peer_id), key=lambda c: c.seq):
            if c.kind == "direct":
                return c.conn
        if addrs:
            self.host.get_peerstore().add_addrs(peer_id, addrs, 3600)

        async def dial() -> INetConn:
            self.dials_started += 1
            direct, _ = self.addrs(peer_id)
            if not direct:
                raise DialError(f"{peer_id}: no direct addresses")
            # every address at once (upstream's host.connect tries one TCP address only)
            return await dial_any(self.host, peer_id, direct, timeout, order=self._order)

        conn = await self._single_flight(("direct", str(peer_id)), dial)
        return self._settled(peer_id, conn)

    async def dial_peer(self, peer_id: ID) -> INetConn:
        return await self.dial_direct(peer_id, timeout=RELAY_CONNECT_TIMEOUT_S)

    async def connect_addr(self, addr: multiaddr.Multiaddr) -> ID:
        """Connect to an address without /p2p/<id>; return who answered (Noise). One dial
        per address at a time; an address we are already connected to is not redialed."""
        transport = str(addr).split("/p2p/")[0]
        for c in self.tracker.all():
            if c.kind == "direct" and c.remote_addr == transport:
                return c.peer

        async def dial() -> ID:
            self.dials_started += 1
            return await dial_unknown_peer(
                self.host, addr, UNKNOWN_TIMEOUT_S, connected=self.existing
            )

        peer: ID = await self._single_flight(("addr", transport), dial)
        return peer

    async def _try_direct(self, peer_id: ID, errors: list[str] | None) -> INetConn | None:
        direct, _ = self.addrs(peer_id)
        if not direct:
            return None
        try:
            return await self.dial_direct(peer_id)
        except Exception as exc:
            if errors is not None:
                errors.append(f"direct: {exc}")
            return None

    def relay_options(self, peer_id: ID) -> list[tuple[str, ID]]:
        """Relays to try for peer_id: its advertised circuits first, then relays we know."""
        assert self.rt is not None
        _, circuit = self.addrs(peer_id)
        opts: list[tuple[str, ID]] = []
        for a in circuit:
            sp = split_circuit(a)
            if sp and sp[1] != self.rt.peer_id and sp not in opts:
                opts.append(sp)
        client = self.rt.relay_client
        extra: list[tuple[str, ID]] = client.candidate_relays() if client is not None else []
        for c in self.tracker.all():
            if c.kind == "direct":
                try:
                    protos = self.host.get_peerstore().get_protocols(c.peer)
                except Exception:
                    protos = []
                if "/libp2p/circuit/relay/0.2.0/hop" in protos:
                    extra.append((c.remote_addr, c.peer))
        # one option per relay: dial_any tries all of a relay's addresses at once
        unique: list[tuple[str, ID]] = []
        for t, r in opts:
            if r not in {u for _, u in unique}:
                unique.append((t, r))
        opts = unique
        known = {r for _, r in opts}
        for t, r in extra:
            if r not in known and r != peer_id:
                known.add(r)
                opts.append((t, r))
        return opts

    async def _try_relayed(self, peer_id: ID, errors: list[str] | None) -> INetConn | None:
        assert self.rt is not None
        for transport, relay in self.relay_options(peer_id):
            try:
                # the address in the circuit first, then any other the relay advertises
                await self.dial_direct(
                    relay,
                    [multiaddr.Multiaddr(transport)] if transport else None,
                    RELAY_CONNECT_TIMEOUT_S,
                )
                best = self.tracker.best(peer_id)
                if best is not None:  # the peer reached us meanwhile: no second connection
                    return best.conn
                self.dials_started += 1
                key = str(peer_id)
                self._circuits[key] = self._circuits.get(key, 0) + 1
                try:
                    conn = await dial_circuit(self.rt, relay, peer_id)
                finally:
                    self._circuits[key] -= 1
                    if not self._circuits[key]:
                        del self._circuits[key]
                log.info("reached %s through relay %s", peer_id, relay)
                return conn
            except (CircuitError, Exception) as exc:
                if errors is not None:
                    errors.append(f"via {relay}: {exc}")
        return None
