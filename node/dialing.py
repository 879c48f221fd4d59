"""Reach a peer: direct addresses first; when none answers, a circuit through a relay.

py-libp2p's swarm drops `/p2p-circuit` addresses when dialing (Swarm.dial_peer filters
them: "this node has no relay transport"), so `host.connect()` can never use one. We dial
circuits ourselves (node/relay/stop.py: CONNECT only, no RESERVE), from addresses learnt
through identify / the peer store, else through any relay we hold a reservation on or
know as a candidate.
"""

from __future__ import annotations

import logging

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from node.overrides.multi_addr_dial import dial_any
from node.relay.stop import CircuitError, dial_circuit
from node.runtime import ConnectionTracker, NodeRuntime

log = logging.getLogger("sentrynet.dialing")

DIRECT_TIMEOUT_S = 3.0  # then the circuit; unreachable private addrs must not stall
RELAY_CONNECT_TIMEOUT_S = 5.0


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


class NodeDialer:
    def __init__(self, host: IHost, tracker: ConnectionTracker) -> None:
        self.host = host
        self.tracker = tracker
        self.rt: NodeRuntime | None = None
        self._locks: dict[ID, trio.Lock] = {}

    def bind(self, rt: NodeRuntime) -> None:
        self.rt = rt

    def addrs(self, peer: ID) -> tuple[list[multiaddr.Multiaddr], list[multiaddr.Multiaddr]]:
        """(direct, circuit) addresses the peer store has for peer."""
        try:
            all_addrs = list(self.host.get_peerstore().addrs(peer))
        except Exception:
            all_addrs = []
        direct = [a for a in all_addrs if "/p2p-circuit" not in str(a)]
        circuit = [a for a in all_addrs if "/p2p-circuit" in str(a)]
        return direct, circuit

    async def connect(self, peer_id: ID) -> None:
        """Direct first, then circuits. Raises DialError naming every attempt."""
        if self.tracker.for_peer(peer_id):
            return
        lock = self._locks.setdefault(peer_id, trio.Lock())
        async with lock:
            if self.tracker.for_peer(peer_id):
                return
            errors: list[str] = []
            if await self.connect_direct(peer_id, errors):
                return
            if await self.connect_relayed(peer_id, errors):
                return
            raise DialError(f"cannot reach {peer_id}: " + "; ".join(errors or ["no addresses"]))

    async def connect_direct(self, peer_id: ID, errors: list[str] | None = None) -> bool:
        direct, _ = self.addrs(peer_id)
        if not direct:
            return False
        try:
            # every address at once (upstream's host.connect tries one TCP address only)
            await dial_any(self.host, peer_id, direct, DIRECT_TIMEOUT_S)
            return True
        except Exception as exc:
            if errors is not None:
                errors.append(f"direct: {exc}")
            return False

    def relay_options(self, peer_id: ID) -> list[tuple[str, ID]]:
        """Relays to try for peer_id: its advertised circuits first, then relays we know."""
        assert self.rt is not None
        _, circuit = self.addrs(peer_id)
        opts: list[tuple[str, ID]] = []
        for a in circuit:
            sp = split_circuit(a)
            if sp and sp[1] != self.rt.peer_id and sp not in opts:
                opts.append(sp)
        client = self.rt.services.get("relay_client")
        extra: list[tuple[str, ID]] = []
        for cand in getattr(client, "candidates", {}).values():
            extra.append((cand.addr, cand.peer))
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

    async def connect_relayed(self, peer_id: ID, errors: list[str] | None = None) -> bool:
        assert self.rt is not None
        for transport, relay in self.relay_options(peer_id):
            try:
                if not any(c.kind == "direct" for c in self.tracker.for_peer(relay)):
                    # the address in the circuit first, then any other the relay advertises
                    known, _ = self.addrs(relay)
                    addrs = [multiaddr.Multiaddr(transport)] if transport else []
                    addrs += [a for a in known if str(a) != transport]
                    await dial_any(self.host, relay, addrs, RELAY_CONNECT_TIMEOUT_S)
                await dial_circuit(self.rt, relay, peer_id)
                log.info("reached %s through relay %s", peer_id, relay)
                return True
            except (CircuitError, Exception) as exc:
                if errors is not None:
                    errors.append(f"via {relay}: {exc}")
        return False
