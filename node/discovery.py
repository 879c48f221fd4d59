"""Peer discovery and connection keeping.

- persistent_peers: kept connected (redial with backoff); an entry without /p2p/<id> is
  dialed by address and the peer id learnt from the Noise handshake.
- peer exchange (`/sentrynet/px/1.0.0`, when p2p.discovery): connected peers are asked,
  PX_FANOUT a round (least recently asked first), for the peers they are connected to
  and the addresses those peers advertise, circuit addresses included. Like the seed,
  addresses of peers in other networks are kept (not filtered as unreachable) since a
  circuit or a hole punch may reach them.
  Rounds run every PX_INTERVAL_S while they bring something new; while they do not (no
  answer names a peer or an address we did not have) the interval doubles up to
  PX_INTERVAL_MAX_S, and a connection to a peer we were not connected to, a close that
  leaves us below the low watermark, or an answer with something new brings it back
  (PxSchedule, _px_news). An answer with the same bytes as that peer's last one is not
  parsed again (PX_REPARSE_S aside).
  Learnt peers are dialed through the node dialer (direct, then circuit) while we have
  fewer peers than the low watermark; over p2p.max_connections the excess is closed
  (node/connmgr.py: the watermarks, the grace period and why).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from node.addr_cache import AddrCache
from node.connmgr import STABLE_S, Candidate, Redial, Watermarks, trim_victims
from node.contract import KnownPeer
from node.runtime import NodeRuntime

log = logging.getLogger("sentrynet.discovery")

PX_ID = TProtocol("/sentrynet/px/1.0.0")
PX_MAX_BYTES = 256 * 1024
PX_MAX_PEERS = 64
PX_INTERVAL_S = 5.0
# Peers asked per round, least recently asked first (a new connection first): with more
# peers than this each is asked every few rounds. Asking every peer every round cost
# O(peers^2) per node per round (each answer lists up to PX_MAX_PEERS peers with their
# addresses): at 32 peers, 6 streams a second. 3 (with a smaller tip-poll sample) took an
# idle node from 0.0325 to 0.0285 cores, but port-forward-sentry's validator then did not
# come back to the sentry's forwarded address after a cut (2 runs of 2): kept at 8.
PX_FANOUT = 8
PX_FIRST_S = 0.5
# A settled peer set: in a follower of 8 nodes on loopback (bench.idle_profile --sample)
# peer exchange every 5 s was about a sixth of the node's CPU, most of it opening the
# streams, then parsing answers identical to the last ones.
PX_INTERVAL_MAX_S = 40.0
# An unchanged answer is parsed again after this long, refreshing its addresses'
# peer-store TTL (ADDR_TTL_S) long before they expire.
PX_REPARSE_S = 600.0
ADDR_TTL_S = 3600
# The px answer is built once and served until the peer set changes or it is this old
# (addresses change through identify, seldom). Built per request, it was a fifth of a
# 64-node testnet's sentry's CPU (py-spy: every connected peer's multiaddrs turned into
# text for each of the ~5 requests a second it served).
PX_ANSWER_TTL_S = 10.0
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0
TRIM_REASON = "max_connections"  # connection_closed reason of a close for the budget


@dataclass
class PxSchedule:
    """When the next peer-exchange round runs: PX_INTERVAL_S after the last one while the
    peer set changes, twice the last interval (at most PX_INTERVAL_MAX_S) after a round
    that brought nothing new. Why: a settled testnet asked every peer every 5 s for the
    answer it had already, and that was the node's largest fixed cost."""

    interval: float = PX_INTERVAL_S
    last_round: float = -math.inf

    def after_round(self, started: float, changed: bool) -> None:
        self.last_round = started
        self.interval = PX_INTERVAL_S if changed else min(self.interval * 2, PX_INTERVAL_MAX_S)

    def reset(self) -> None:
        self.interval = PX_INTERVAL_S

    def next_at(self) -> float:
        return self.last_round + self.interval


@dataclass
class Known:
    peer: ID
    source: str  # persistent | px:<peer>
    redial: Redial = field(default_factory=Redial)
    failures: int = 0
    last_error: str = ""


@dataclass
class Persistent:
    addr: str
    peer: ID | None
    next_dial: float = 0.0
    backoff: float = BACKOFF_MIN_S


class DiscoveryService:
    name = "discovery"

    def __init__(self) -> None:
        self.rt: NodeRuntime | None = None
        self.known: dict[ID, Known] = {}
        self.persistent: list[Persistent] = []
        self._wake = trio.Event()
        self._dialing: set[ID] = set()
        self._trimming: set[ID] = set()  # being closed for the budget (ticks overlap)
        self._trimmed_at: dict[ID, float] = {}  # peer -> when last closed for the budget
        self._px_asked: dict[ID, float] = {}  # peer -> when peer exchange last asked it
        self._px_answers: dict[ID, tuple[float, bytes]] = {}  # peer -> (parsed at, answer)
        self._px_schedule = PxSchedule()
        self._px_changed = False  # this round (or an event during it) brought something new
        self._px_kick = trio.Event()  # a connection event while the loop waits
        self._px_answer: tuple[float, bytes] | None = None  # (built at, the answer we serve)
        self._addrs = AddrCache()  # px's text <-> multiaddr and peer id conversions

    def status(self) -> dict[str, Any]:
        return {"known": self.known_json()}

    def dials_in_flight(self) -> int:
        """Peers being dialed now (DialsInFlight, node/runtime.py)."""
        return len(self._dialing)

    def known_json(self) -> list[dict[str, Any]]:
        out = []
        rt = self.rt
        for k in list(self.known.values()):
            addrs: list[str] = []
            if rt is not None:
                try:
                    addrs = [str(a) for a in rt.host.get_peerstore().addrs(k.peer)]
                except Exception:
                    addrs = []
            out.append(
                KnownPeer(
                    peer=str(k.peer),
                    source=k.source,
                    addrs=tuple(addrs),
                    failures=k.failures,
                    last_error=k.last_error,
                ).to_json()
            )
        return out

    async def run(self, rt: NodeRuntime) -> None:
        self.rt = rt
        for a in rt.config.p2p.persistent_peers:
            ma = multiaddr.Multiaddr(a)
            pid = ma.get_peer_id()
            peer = ID.from_base58(pid) if pid else None
            transport = str(ma).split("/p2p/")[0] if "/p2p-circuit" not in str(ma) else str(ma)
            self.persistent.append(Persistent(transport, peer))
            if peer is not None:
                rt.host.get_peerstore().add_addrs(
                    peer,
                    [ma.decapsulate_code(421)] if "/p2p-circuit" not in a else [ma],
                    ADDR_TTL_S,
                )
                self.known[peer] = Known(peer, "persistent")
        if rt.config.p2p.discovery:
            rt.host.set_stream_handler(PX_ID, self._serve_px)
        rt.connections.subscribe(self._on_conn)
        async with trio.open_nursery() as n:
            if rt.config.p2p.discovery:
                n.start_soon(self._px_loop)
            while True:
                self._wake = trio.Event()
                self._keep(n)
                with trio.move_on_after(1.0):
                    await self._wake.wait()

    def _on_conn(self, event: str, info: Any) -> None:
        k = self.known.get(info.peer)
        # a peer that hung up at once (likely over its own budget) is dialed again only
        # after a backoff, longer each time, instead of churning (connmgr.Redial)
        if (
            event == "closed"
            and k is not None
            and info.peer not in self._connected_peers()
            and k.redial.closed(info.opened_at, time.monotonic()) == "backoff"
        ):
            k.failures += 1
        self._wake.set()
        self._px_answer = None  # our own answer lists the peers we are connected to
        if self._px_news(event, info.peer):
            self._px_changed = True
            self._px_schedule.reset()
            self._px_kick.set()

    def _px_news(self, event: str, peer: ID) -> bool:
        assert self.rt is not None
        connected = self._connected_peers()
        return px_news(
            event,
            len(self.rt.connections.for_peer(peer)),
            len(connected),
            Watermarks.of(self.rt.config.p2p.max_connections, self.rt.config.p2p.low_watermark).low,
        )

    def _connected_peers(self) -> set[ID]:
        assert self.rt is not None
        return {c.peer for c in self.rt.connections.all()}

    def _keep(self, n: trio.Nursery) -> None:
        assert self.rt is not None
        rt = self.rt
        now = time.monotonic()
        connected = self._connected_peers()
        for p in self.persistent:
            if p.peer is not None and p.peer in connected:
                p.backoff = BACKOFF_MIN_S
                continue
            if now >= p.next_dial:
                p.next_dial = now + p.backoff
                p.backoff = min(p.backoff * 2, BACKOFF_MAX_S)
                n.start_soon(self._dial_persistent, p)
        marks = Watermarks.of(rt.config.p2p.max_connections, rt.config.p2p.low_watermark)
        room = marks.dial_room(len(connected | self._dialing))
        if len(connected) > marks.high:
            victims = [v for v in self._victims(marks, now) if v not in self._trimming]
            if victims:
                self._trimming.update(victims)
                n.start_soon(self._trim, victims)
        for k in sorted(self.known.values(), key=lambda k: k.failures):
            if room <= 0:
                break
            if k.peer in connected or k.peer in self._dialing or k.peer == rt.peer_id:
                continue
            if not k.redial.due(now):
                continue
            room -= 1
            k.redial.dialed(now)
            self._dialing.add(k.peer)  # counted against max_connections until it ends
            n.start_soon(self._dial_known, k)

    def _protected(self) -> set[ID]:
        """Peers never trimmed: persistent peers, relays we hold reservations on, peers
        holding a reservation on us or a circuit through us."""
        assert self.rt is not None
        keep = {p.peer for p in self.persistent if p.peer is not None}
        client = self.rt.relay_client
        if client is not None:
            keep |= client.relays_held() | client.relays_pending()
        server = self.rt.relay_server
        if server is not None:
            keep |= server.peers_served()
        return keep

    def _victims(self, marks: Watermarks, now: float) -> list[ID]:
        """Over p2p.max_connections: whom to close (connmgr.trim_victims), each peer by
        its newest connection."""
        assert self.rt is not None
        newest: dict[ID, Any] = {}
        for c in self.rt.connections.all():
            if c.peer not in newest or c.opened_at > newest[c.peer].opened_at:
                newest[c.peer] = c
        peers = [Candidate(p, c.direction == "inbound", c.opened_at) for p, c in newest.items()]
        for p, t in list(self._trimmed_at.items()):
            if now - t >= STABLE_S:
                del self._trimmed_at[p]
        return trim_victims(marks, peers, self._protected(), now, recent=self._trimmed_at)

    async def _trim(self, victims: list[ID]) -> None:
        assert self.rt is not None
        for peer in victims:
            self._trimmed_at[peer] = time.monotonic()
            k = self.known.get(peer)
            if k is not None:  # do not dial it straight back
                k.redial.hold(time.monotonic() + BACKOFF_MAX_S * 6)
            log.info(
                "over max_connections (%d): closing %s", self.rt.config.p2p.max_connections, peer
            )
            try:
                # every connection we track to it, not host.disconnect: upstream
                # Swarm.close_peer (py-libp2p 0.8.1) pops the peer's whole entry after
                # awaiting the closes, so a connection that arrived meanwhile drops out
                # of the swarm's table unclosed and no later disconnect can reach it
                for info in self.rt.connections.for_peer(peer):
                    with contextlib.suppress(Exception):
                        await self.rt.connections.close(info.conn, TRIM_REASON)
            finally:
                self._trimming.discard(peer)

    async def _dial_persistent(self, p: Persistent) -> None:
        assert self.rt is not None
        try:
            if p.peer is None:
                peer = await self.rt.dialer.connect_addr(multiaddr.Multiaddr(p.addr))
                p.peer = peer
                self.known.setdefault(peer, Known(peer, "persistent"))
            else:
                await self.rt.dialer.connect(p.peer)
        except Exception as exc:
            log.info("persistent peer %s unreachable: %s", p.peer or p.addr, exc)

    async def _dial_known(self, k: Known) -> None:
        assert self.rt is not None
        self._dialing.add(k.peer)
        try:
            await self.rt.dialer.connect(k.peer)
            k.failures = 0  # the backoff resets when the connection proves stable (_on_conn)
            k.last_error = ""
        except Exception as exc:
            k.failures += 1
            k.last_error = str(exc)[:300]
            log.info("peer %s (from %s) unreachable: %s", k.peer, k.source, k.last_error)
        finally:
            self._dialing.discard(k.peer)
            self._wake.set()

    # -- peer exchange --
    def _px_record(self) -> list[dict[str, Any]]:
        assert self.rt is not None
        ps = self.rt.host.get_peerstore()
        out = []
        for peer in list(self._connected_peers())[:PX_MAX_PEERS]:
            try:
                addrs = [self._addrs.text(a) for a in ps.addrs(peer)]
            except Exception:
                addrs = []
            if addrs:
                out.append({"peer": self._addrs.id_text(peer), "addrs": addrs})
        return out

    def _px_answer_bytes(self) -> bytes:
        """What we answer to peer exchange: built once per peer-set change or
        PX_ANSWER_TTL_S."""
        now = time.monotonic()
        if self._px_answer is None or now - self._px_answer[0] >= PX_ANSWER_TTL_S:
            self._px_answer = (now, json.dumps({"peers": self._px_record()}).encode())
        return self._px_answer[1]

    async def _serve_px(self, stream: INetStream) -> None:
        assert self.rt is not None
        self.rt.metrics.px_served_total.inc()
        try:
            await stream.write(self._px_answer_bytes())
            await stream.close()
        except Exception:
            with contextlib.suppress(Exception):
                await stream.reset()

    async def _px_loop(self) -> None:
        assert self.rt is not None
        await trio.sleep(PX_FIRST_S)
        while True:
            started = time.monotonic()
            self._px_changed = False
            async with trio.open_nursery() as n:
                for peer in self._px_round(started):
                    n.start_soon(self._ask, peer)
            self._px_schedule.after_round(started, self._px_changed)
            while (wait := self._px_schedule.next_at() - time.monotonic()) > 0:
                self._px_kick = trio.Event()
                with trio.move_on_after(wait):
                    await self._px_kick.wait()  # a reset may bring the next round forward

    def _px_round(self, now: float) -> list[ID]:
        """The peers to ask this round: PX_FANOUT of the connected ones, least recently
        asked (never asked) first."""
        connected = self._connected_peers()
        for gone in set(self._px_asked) - connected:
            del self._px_asked[gone]
        for gone in set(self._px_answers) - connected:
            del self._px_answers[gone]
        peers = sorted(connected, key=lambda p: (self._px_asked.get(p, -math.inf), p.to_bytes()))
        chosen = peers[:PX_FANOUT]
        for p in chosen:
            self._px_asked[p] = now
        return chosen

    async def _ask(self, peer: ID) -> None:
        assert self.rt is not None
        rt = self.rt
        try:
            with trio.fail_after(5):
                s = await rt.host.new_stream(peer, [PX_ID])
                buf = bytearray()
                while len(buf) <= PX_MAX_BYTES:
                    try:
                        chunk = await s.read(65536)
                    except StreamEOF:
                        break
                    if not chunk:
                        break
                    buf += chunk
        except Exception:
            return
        if not buf:
            # no answer at all: the stream or its connection closed before a byte came (a
            # circuit closed under the request; a peer trimming us). A px server always
            # answers at least {"peers": []}; nothing is not a malformed message
            rt.metrics.px_asked_total.labels(answer="none").inc()
            return
        answer = bytes(buf[:PX_MAX_BYTES])
        now = time.monotonic()
        last = self._px_answers.get(peer)
        if last is not None and last[1] == answer and now - last[0] < PX_REPARSE_S:
            rt.metrics.px_asked_total.labels(answer="unchanged").inc()
            return
        try:
            doc = json.loads(answer)
            entries = doc["peers"][:PX_MAX_PEERS]
        except Exception:
            rt.reject("px", "malformed")
            return
        changed = last is None or last[1] != answer  # else a refresh after PX_REPARSE_S
        self._px_answers[peer] = (now, answer)
        rt.metrics.px_asked_total.labels(answer="changed" if changed else "unchanged").inc()
        ps = rt.host.get_peerstore()
        novel = False  # a peer or an address we did not have: what keeps rounds frequent
        for e in entries:
            try:
                pid = self._addrs.peer_id(e["peer"])
                addrs = [self._addrs.parse(a) for a in e["addrs"][:16]]
            except Exception:
                continue
            if pid == rt.peer_id:
                continue
            # keep every address, other networks' and circuits included (see docstring)
            clean = []
            tail = f"/p2p/{self._addrs.id_text(pid)}"
            for a in addrs:
                text = self._addrs.text(a)
                if text.endswith(tail) and "/p2p-circuit" not in text:
                    a = self._addrs.parse(text[: -len(tail)])
                clean.append(a)
            if not novel:
                novel = pid not in self.known or not holds_addrs(ps, pid, clean)
            ps.add_addrs(pid, clean, ADDR_TTL_S)
            if pid not in self.known:
                self.known[pid] = Known(pid, f"px:{peer}")
                log.info("learnt peer %s from %s: %s", pid, peer, ", ".join(map(str, clean)))
                self._wake.set()
        self._px_changed = self._px_changed or novel


def px_news(event: str, conns_to_peer: int, peers_connected: int, low: int) -> bool:
    """Whether a connection event brings peer-exchange rounds back to PX_INTERVAL_S: the
    first connection to a peer (a new source), or the close of a peer's last one that
    leaves us below the low watermark (we need peers). Not a duplicate, a circuit upgraded
    to a direct connection, or a close above the watermark: at 64 nodes such events came
    every few seconds, so rounds never backed off, and peer exchange took about a sixth of
    a client's busy time (py-spy)."""
    if event == "opened":
        return conns_to_peer == 1
    if event == "closed":
        return conns_to_peer == 0 and peers_connected < low
    return False


def holds_addrs(ps: Any, peer: ID, addrs: list[multiaddr.Multiaddr]) -> bool:
    """Whether the peer store holds every one of `addrs` for `peer` already."""
    try:
        return set(addrs) <= set(ps.addrs(peer))
    except Exception:  # upstream raises for a peer without addresses
        return False


__all__ = ["PX_ID", "DiscoveryService", "PeerInfo"]
