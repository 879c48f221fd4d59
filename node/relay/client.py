"""Relay client (mode client|both): find relays dynamically, hold reservations, advertise
circuit addresses.

Candidates come from two places:
- [relay] relay_servers: dialed at start (an address without /p2p/<id> too); the peer
  that answers our dial there is the relay (or, when it reached us first, the peer identify
  reports listening there) — the dynamic discovery the seed could not do;
- any identified peer whose protocols include the hop protocol.
We reserve on up to `max_reservations_held` candidates (configured ones first), refresh
at 3/4 of each reservation's lifetime, renewing it in place (it stays held and advertised
across the refresh; a refresh that gets no answer while the relay is connected is retried
until the reservation expires), and when a relay's connection drops (a restart), the relay
denies a refresh or the reservation expires unrenewed, we drop the reservation, fail over
to another candidate and redial the lost one with exponential backoff. Every change of the
reservation set updates the advertised `<relay addr>/p2p/<relay>/p2p-circuit` addresses
(event addrs_advertised) and pushes identify.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p.identity.identify_push.identify_push import push_identify_to_peers
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as PbPeer
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_ID
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode

from node.contract import RelayCandidate, Reservation
from node.dialing import RELAY_CONNECT_TIMEOUT_S
from node.overrides.stream_on import open_stream_on
from node.relay.wire import WireError, read_msg, write_msg
from node.runtime import ConnInfo, NodeRuntime

log = logging.getLogger("sentrynet.relay.client")

RESERVE_TIMEOUT_S = 10.0
# A relay that let a RESERVE time out is asked next with twice the time, up to this: at
# 64 nodes on 2 cores relays answered in 10-20 s, and a client that gave up at 10 s and
# asked again 4 s later kept a relay busy with requests nobody waited for any more (the
# relay counted them `truncated`) while never getting its reservation.
RESERVE_TIMEOUT_MAX_S = 40.0
BACKOFF_MIN_S = 0.25
BACKOFF_MAX_S = 4.0
DENIED_BACKOFF_S = 5.0
PENDING_GRACE_S = 30.0  # a relay dialed to reserve on is kept this long (relays_pending)


def transport_part(addr: multiaddr.Multiaddr | str) -> str:
    """`/ip4/1.2.3.4/tcp/4001/p2p/X/...` -> `/ip4/1.2.3.4/tcp/4001`."""
    s = str(addr)
    return s.split("/p2p/")[0].split("/p2p-circuit")[0]


@dataclass
class Configured:
    addr: str  # transport part
    peer: ID | None  # from /p2p/<id>, or learnt through identify
    backoff: float = BACKOFF_MIN_S
    next_dial: float = 0.0  # monotonic
    dialing: bool = False  # a dial is under way: never two at once (see _dial_configured)


@dataclass
class Candidate:
    peer: ID
    addr: str
    source: str  # config | identify
    not_before: float = 0.0  # monotonic; backoff after a denial or failure
    failures: int = 0
    dialed_at: float = -1e9  # monotonic; when we last dialed it to reserve on it
    timeout_s: float = RESERVE_TIMEOUT_S  # for the next RESERVE (doubled after a timeout)


@dataclass
class Held:
    relay: ID
    relay_addrs: list[str]
    expires_at: int  # unix
    accepted_at: float  # monotonic
    accepted_wall: float
    circuit_addrs: list[multiaddr.Multiaddr] = field(default_factory=list)
    retry_at: float = 0.0  # unix; after a refresh attempt that got no answer
    retries: int = 0
    # the connection (ConnInfo.seq) the relay got the RESERVE on: relays open the STOP
    # stream of a circuit on it (ours, node/relay/server.py; rust-libp2p ties the reservation
    # to it), so when it closes while another connection to the relay lives, the
    # reservation moves to that one at once (refresh_now) instead of at 3/4 of its TTL
    conn_seq: int | None = None
    refresh_now: bool = False

    @property
    def refresh_at(self) -> float:
        """Unix time to refresh: 3/4 through the reservation's lifetime, or the retry of a
        refresh that got no answer."""
        if self.refresh_now:
            return 0.0
        due = self.accepted_wall + 0.75 * max(1.0, self.expires_at - self.accepted_wall)
        return max(due, self.retry_at)

    def to_json(self) -> dict[str, Any]:
        return Reservation(
            relay=str(self.relay),
            relay_addrs=tuple(self.relay_addrs),
            addrs=tuple(str(a) for a in self.circuit_addrs),
            expires_at=self.expires_at,
            accepted_at=round(self.accepted_at, 4),
        ).to_json()


class RelayClient:
    name = "relay_client"

    def __init__(self) -> None:
        self.rt: NodeRuntime | None = None
        self.configured: list[Configured] = []
        self.candidates: dict[ID, Candidate] = {}
        self.held: dict[ID, Held] = {}
        self._wake = trio.Event()
        self._reserving: set[ID] = set()
        self._advertised: list[str] = []  # circuit addresses in the last addrs_advertised

    # -- public views --
    def circuit_addrs(self) -> list[multiaddr.Multiaddr]:
        out: list[multiaddr.Multiaddr] = []
        for h in list(self.held.values()):
            out += h.circuit_addrs
        return out

    def reservations_json(self) -> list[dict[str, Any]]:
        return [h.to_json() for h in list(self.held.values())]

    def candidates_json(self) -> list[dict[str, Any]]:
        return [
            RelayCandidate(peer=str(c.peer), addr=c.addr, source=c.source).to_json()
            for c in list(self.candidates.values())
        ]

    def status(self) -> dict[str, Any]:
        return {
            "reservations": self.reservations_json(),
            "relay_candidates": self.candidates_json(),
        }

    # -- what other services ask (RelayHolder, node/runtime.py) --
    def relays_held(self) -> set[ID]:
        """Relays we hold a reservation on."""
        return set(self.held)

    def relays_pending(self) -> set[ID]:
        """Relays configured, being reserved on, or dialed a moment ago to reserve on: the
        peer budget must not close them. Seen at 64 nodes: a client whose configured relay
        was too slow dialed another relay every 4 s, and discovery closed it each time
        for the budget before the RESERVE went out."""
        now = time.monotonic()
        recent = {c.peer for c in self.candidates.values() if now - c.dialed_at < PENDING_GRACE_S}
        configured = {c.peer for c in self.configured if c.peer is not None}
        return set(self._reserving) | recent | configured

    def candidate_relays(self) -> list[tuple[str, ID]]:
        """(transport address, peer) of every relay candidate."""
        return [(c.addr, c.peer) for c in list(self.candidates.values())]

    def reservation_pending(self) -> bool:
        """Relay candidates but no reservation yet: until one is held, peers behind other
        NATs cannot dial us over a circuit."""
        return bool(self.candidates) and not self.held

    def wake(self) -> None:
        self._wake.set()

    # -- service --
    async def run(self, rt: NodeRuntime) -> None:
        self.rt = rt
        for a in rt.config.relay.relay_servers:
            ma = multiaddr.Multiaddr(a)
            pid = ma.get_peer_id()
            self.configured.append(
                Configured(transport_part(ma), ID.from_base58(pid) if pid else None)
            )
        rt.connections.subscribe(self._on_conn)
        if rt.identify_hook is not None:
            rt.identify_hook.subscribe(self._on_identified)
        log.info(
            "relay client: %d configured relay(s), holding up to %d reservations",
            len(self.configured),
            rt.config.relay.max_reservations_held,
        )
        while True:
            self._wake = trio.Event()
            await self._step()
            with trio.move_on_after(self._next_timer()):
                await self._wake.wait()

    def _next_timer(self) -> float:
        now_m, now_w = time.monotonic(), time.time()
        t = 5.0
        for c in self.configured:
            if not c.dialing and not self._connected(c.peer):
                t = min(t, max(0.0, c.next_dial - now_m))
        for h in self.held.values():
            t = min(t, max(0.0, h.refresh_at - now_w))
        for cand in self.candidates.values():
            if cand.not_before > now_m:
                t = min(t, cand.not_before - now_m)
        return max(t, 0.02)

    def _connected(self, peer: ID | None) -> bool:
        assert self.rt is not None
        return peer is not None and any(
            c.kind == "direct" for c in self.rt.connections.for_peer(peer)
        )

    async def _step(self) -> None:
        assert self.rt is not None
        rt = self.rt
        now = time.monotonic()
        # 1. (re)dial configured relays that are not connected
        for c in self.configured:
            if not c.dialing and not self._connected(c.peer) and now >= c.next_dial:
                c.dialing = True
                rt.nursery.start_soon(self._dial_configured, c)
        # 2. refresh reservations due
        for h in list(self.held.values()):
            if time.time() >= h.refresh_at and h.relay not in self._reserving:
                rt.nursery.start_soon(self._reserve, h.relay)
        # 3. fill up to max_reservations_held from connected candidates
        want = (
            rt.config.relay.max_reservations_held
            - len(self.held)
            - len([p for p in self._reserving if p not in self.held])
        )
        if want > 0:
            order = sorted(
                self.candidates.values(),
                key=lambda c: (c.source != "config", c.failures),
            )
            for cand in order:
                if want <= 0:
                    break
                if cand.peer in self.held or cand.peer in self._reserving:
                    continue
                if cand.not_before > now or not self._connected(cand.peer):
                    if cand.source == "identify" and cand.not_before <= now:
                        rt.nursery.start_soon(self._dial_known, cand)
                    continue
                want -= 1
                rt.nursery.start_soon(self._reserve, cand.peer)

    async def _dial_configured(self, c: Configured) -> None:
        """One dial of a configured relay; the next waits for its end plus the backoff.
        A dial lasts up to the handshake's 30 s, and the next used to start a backoff (at
        most 4 s) after this one STARTED: the later ones joined the dial under way (one
        dial per address, node/dialing.py) and failed with it, so at 128 nodes, where
        relays were slow to finish handshakes, one failure was logged seven times and grew
        the backoff seven times."""
        assert self.rt is not None
        try:
            await self._dial_configured_once(c)
        finally:
            c.dialing = False

    async def _dial_configured_once(self, c: Configured) -> None:
        assert self.rt is not None
        try:
            # a DIRECT connection, also when a relayed one to the relay exists: upstream's
            # host.connect returns at once for any connected peer, so a relay that came
            # back and reached us through a circuit first was never redialed and never
            # reserved on again (relay-failover: node4..6 -> restarted node3)
            if c.peer is not None:
                await self.rt.dialer.dial_direct(
                    c.peer, [multiaddr.Multiaddr(c.addr)], RELAY_CONNECT_TIMEOUT_S
                )
            else:
                answered = await self.rt.dialer.connect_addr(multiaddr.Multiaddr(c.addr))
                log.info("configured relay %s answered as %s", c.addr, answered)
                c.peer = answered
        except BaseException as exc:
            if isinstance(exc, trio.Cancelled):
                raise
            log.info(
                "relay %s unreachable (%s); retry in %.2fs", c.addr, type(exc).__name__, c.backoff
            )
            c.next_dial = time.monotonic() + c.backoff
            c.backoff = min(c.backoff * 1.5, BACKOFF_MAX_S)
            self.wake()
            return
        c.backoff = BACKOFF_MIN_S
        # The peer that answered at the configured address (Noise proved who it is) is the
        # relay: a candidate now, the RESERVE itself shows whether it speaks hop. Waiting
        # for identify to report it listening there cost 20 s a client at 64 nodes, where
        # the relays were busy, and at 128 most clients never got past it: an unreserved
        # client is the first a relay over its peer budget closes. Identify still matches a
        # configured relay that reached us first (_on_identified).
        self._add_candidate(c.peer, c.addr, "config", via="dial")

    async def _dial_known(self, cand: Candidate) -> None:
        """Dial a relay found by identify; like _dial_configured, one dial at a time (it
        is not due again while this one lasts), the next BACKOFF_MAX_S after its end."""
        assert self.rt is not None
        cand.not_before = math.inf
        cand.dialed_at = time.monotonic()
        try:
            await self.rt.dialer.dial_direct(
                cand.peer, [multiaddr.Multiaddr(cand.addr)], RELAY_CONNECT_TIMEOUT_S
            )
        except Exception:
            cand.failures += 1
            cand.not_before = time.monotonic() + BACKOFF_MAX_S
            return
        except BaseException:
            cand.not_before = time.monotonic() + BACKOFF_MAX_S
            raise
        cand.not_before = time.monotonic()  # connected: reserve now
        self.wake()

    # -- discovery of candidates --
    def _on_identified(self, peer: ID) -> None:
        assert self.rt is not None
        rt = self.rt
        ps = rt.host.get_peerstore()
        try:
            protos = set(ps.get_protocols(peer))
        except Exception:
            protos = set()
        try:
            addrs = [transport_part(a) for a in ps.addrs(peer) if "/p2p-circuit" not in str(a)]
        except Exception:
            addrs = []
        conn_addrs = [c.remote_addr for c in rt.connections.for_peer(peer) if c.kind == "direct"]
        source = None
        addr = ""
        for c in self.configured:
            if c.peer == peer or (c.peer is None and (c.addr in addrs or c.addr in conn_addrs)):
                if c.peer is None:
                    log.info("configured relay %s identified as %s", c.addr, peer)
                    c.peer = peer
                source, addr = "config", c.addr
                break
        if source is None and str(HOP_ID) in protos:
            source = "identify"
            addr = (conn_addrs or addrs or [""])[0]
        if source is None:
            return
        if source == "config" and str(HOP_ID) not in protos:
            log.warning("configured relay %s (%s) does not speak %s", addr, peer, HOP_ID)
        self._add_candidate(peer, addr, source, via="identify")

    def _add_candidate(self, peer: ID, addr: str, source: str, via: str) -> None:
        """A relay to reserve on; a configured one replaces one found by its protocols."""
        assert self.rt is not None
        cand = self.candidates.get(peer)
        if cand is None or (cand.source != source and source == "config"):
            self.candidates[peer] = Candidate(peer, addr, source)
            self.rt.events.emit(
                "relay_discovered", peer=str(peer), addr=addr, source=source, via=via
            )
        self.wake()

    async def _on_conn(self, event: str, info: ConnInfo) -> None:
        if event == "opened":
            self.wake()
            return
        held = self.held.get(info.peer)
        if held is not None and not self._connected(info.peer):
            await self._drop(info.peer, "connection_closed")
        elif held is not None and held.conn_seq == info.seq:
            # the reservation's connection closed, another one to the relay lives (after a
            # NAT rebind: the new connection is up before the dead one is noticed)
            held.refresh_now = True
            log.info("reservation on %s: its connection closed; reserving on another", info.peer)
        for c in self.configured:
            if info.peer == c.peer:
                c.next_dial = time.monotonic()  # first redial at once, then back off
        self.wake()

    # -- reservations --
    async def _drop(self, relay: ID, reason: str) -> None:
        assert self.rt is not None
        held = self.held.pop(relay, None)
        if held is None:
            return
        self.rt.metrics.reservations_active.dec()
        self.rt.events.emit("reservation_expired", relay=str(relay), reason=reason)
        await self._advertise()

    async def _advertise(self) -> None:
        """The reservation set changed: when that changed the circuit addresses we
        advertise, record it (`addrs_advertised`, the whole new list, emitted before any
        await so it follows the reservation event that caused it) and tell every connected
        peer (identify push). A refresh that hands out the same addresses changes nothing:
        the addresses stay advertised across it (js-libp2p #3571 withdrew them)."""
        assert self.rt is not None
        own = f"/p2p/{self.rt.peer_id}"
        now = [
            s if s.endswith(own) else s + own
            for s in dict.fromkeys(str(a) for a in self.circuit_addrs())
        ]
        if now == self._advertised:
            return
        self._advertised = now
        self.rt.events.emit("addrs_advertised", addrs=now)
        try:
            await push_identify_to_peers(self.rt.host)
        except Exception as exc:
            log.debug("identify push failed: %r", exc)

    async def _reserve(self, relay: ID) -> None:
        assert self.rt is not None
        rt = self.rt
        if relay in self._reserving:
            return
        self._reserving.add(relay)
        try:
            outcome, detail, held = await self._do_reserve(relay)
        finally:
            self._reserving.discard(relay)
        cand = self.candidates.get(relay)
        if held is not None:
            new = relay not in self.held
            self.held[relay] = held
            if cand is not None:
                cand.failures = 0
            if new:
                rt.metrics.reservations_active.inc()
            rt.metrics.reservations_total.labels(outcome="accepted").inc()
            if new:
                rt.events.emit(
                    "reservation_accepted",
                    relay=str(relay),
                    addrs=[str(a) for a in held.circuit_addrs],
                    expires_at=held.expires_at,
                )
            else:
                # renewed in place: the reservation was never dropped, so its circuit
                # addresses stay advertised (re-advertised only if the relay's changed)
                rt.events.emit(
                    "reservation_refreshed", relay=str(relay), expires_at=held.expires_at
                )
            await self._advertise()
        else:
            rt.metrics.reservations_total.labels(outcome=outcome).inc()
            rt.events.emit("reservation_denied", relay=str(relay), reason=detail)
            if cand is not None:
                cand.failures += 1
                cand.not_before = time.monotonic() + (
                    DENIED_BACKOFF_S
                    if outcome == "denied"
                    else min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2**cand.failures)
                )
            old = self.held.get(relay)
            if old is not None and self._keep_through(old, outcome):
                # no answer (a loaded relay, a slow path) while the relay is still
                # connected and the reservation has not expired: it still stands on the
                # relay, so keep it, and its addresses, and ask again soon; dropping it
                # here would withdraw a working circuit address (js-libp2p #3571)
                old.retries += 1
                old.retry_at = time.time() + min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2**old.retries)
                log.info(
                    "refresh on %s got no answer (%s); kept until %d, retry %d",
                    relay,
                    detail,
                    old.expires_at,
                    old.retries,
                )
            elif relay in self.held:
                await self._drop(relay, f"refresh failed: {detail}")
        self.wake()

    def _keep_through(self, held: Held, outcome: str) -> bool:
        """A failed refresh keeps the reservation when it was an error, not the relay's
        denial, the relay is still connected and the reservation has not expired."""
        return (
            outcome == "error"
            and self._connected(held.relay)
            and time.time() < held.expires_at - 1.0
        )

    async def _do_reserve(self, relay: ID) -> tuple[str, str, Held | None]:
        assert self.rt is not None
        rt = self.rt
        direct = [c for c in rt.connections.for_peer(relay) if c.kind == "direct"]
        if not direct:
            return "error", "no direct connection to the relay", None
        cand = self.candidates.get(relay)
        timeout = cand.timeout_s if cand is not None else RESERVE_TIMEOUT_S
        try:
            with trio.fail_after(timeout):
                # on a direct connection: the relay refuses a RESERVE over a relayed one,
                # and host.new_stream may pick either. The newest: after a network change
                # (a NAT rebind) the older one may be dead without either side knowing yet
                chosen = max(direct, key=lambda c: c.seq)
                s = await open_stream_on(rt.host, chosen.conn, [HOP_ID], timeout)
                await write_msg(
                    s, HopMessage(type=HopMessage.RESERVE, peer=PbPeer(id=rt.peer_id.to_bytes()))
                )
                resp = await read_msg(s, HopMessage, timeout=timeout)
        except WireError as exc:
            rt.reject("hop", exc.reason)
            return "error", f"bad reply: {exc}", None
        except trio.TooSlowError:
            if cand is not None:
                cand.timeout_s = min(RESERVE_TIMEOUT_MAX_S, timeout * 2)
            return "error", f"no answer within {timeout:.0f}s", None
        except Exception as exc:
            return "error", f"{type(exc).__name__}: {exc}", None
        if cand is not None:
            cand.timeout_s = RESERVE_TIMEOUT_S
        with contextlib.suppress(Exception):
            await s.close()
        status = StatusCode(resp.status) if resp.HasField("status") else StatusCode.UNUSED
        if resp.type != HopMessage.STATUS or status != StatusCode.OK:
            return "denied", status.name, None
        if not resp.HasField("reservation"):
            rt.reject("hop", "malformed")
            return "error", "OK without a reservation", None
        resv = resp.reservation
        relay_addrs: list[str] = []
        for raw in resv.addrs:
            try:
                relay_addrs.append(str(multiaddr.Multiaddr(raw)))
            except Exception:
                continue
        if not relay_addrs:
            # a relay listening on a wildcard sends none: use the address we reached it on
            relay_addrs = [
                f"{c.remote_addr}/p2p/{relay}"
                for c in rt.connections.for_peer(relay)
                if c.kind == "direct"
            ][:1]
        circuits = []
        for a in relay_addrs:
            base = a if f"/p2p/{relay}" in a else f"{transport_part(a)}/p2p/{relay}"
            circuits.append(multiaddr.Multiaddr(f"{base}/p2p-circuit"))
        held = Held(
            relay=relay,
            relay_addrs=relay_addrs,
            expires_at=int(resv.expire),
            accepted_at=time.monotonic(),
            accepted_wall=time.time(),
            circuit_addrs=circuits,
            conn_seq=chosen.seq,
        )
        return "accepted", "OK", held
