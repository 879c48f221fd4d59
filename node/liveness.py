"""Connection liveness: ping every quiet connection, close the ones that stopped answering.

py-libp2p 0.8.1 has no keepalive, and TCP takes many minutes to notice a peer whose
packets are silently dropped (a partition by iptables DROP, a frozen process, a NAT
mapping gone): such a connection stays in /status, and a relay client keeps believing in
a reservation on a relay that vanished. Every `p2p.ping_interval_s` this service looks at
each connection, direct and relayed alike: if the peer sent anything on it since the last
look (gossip, a request, the peer's own ping), the peer is alive and no ping is needed;
otherwise it runs one libp2p ping (`/ipfs/ping/1.0.0`) on that connection itself (a stream
opened on that connection, not `host.new_stream(peer)`, which picks any, and kept for the
next ping). A connection's first look always pings, and a connection that is never quiet
is still pinged every RTT_REFRESH_S, so every connection has an RTT. Both ends follow the
rule, so a quiet connection is pinged by one end (the other hears those pings) instead of
by both, and one that carries gossip every second is pinged twice a minute instead of
twelve times per end: pings were 11 % of an idle node's writes in the sentry testnet
(strace) and 7.5 % of a loaded sentry's samples at 64 nodes (py-spy).
After `p2p.ping_failures` pings in a row unanswered within `p2p.ping_timeout_s` it closes
the connection through the tracker, whose connection_closed event then carries
`reason="ping_timeout"`. A ping that times out while other data still arrived on the
connection is a slow peer (a loaded host), not a silent one: it is not counted as a miss.
Subscribers (relay client: drop the reservation and fail over;
discovery: redial) react as to any close. RTTs land in the /status connection rows
(`rtt_s`, `rtt_median_s`) and in `sentrynet_ping_rtt_seconds`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import statistics
import time
from collections import deque
from typing import Any

import trio
from libp2p.host.ping import ID as PING_ID
from libp2p.host.ping import perform_ping_roundtrip

from node.contract import Liveness
from node.overrides.read_watch import watch_reads
from node.overrides.stream_on import open_stream_on
from node.runtime import ConnInfo, NodeRuntime

log = logging.getLogger("sentrynet.liveness")

RTT_WINDOW = 9  # pings the median is taken over
# A ping stream idle this long is replaced, not reused: py-libp2p's responder closes a
# ping stream after 10 s without a ping (host/ping.py RESP_TIMEOUT), so with a longer
# p2p.ping_interval_s the next ping would meet a closed stream and count as a miss.
STREAM_IDLE_S = 8.0
CLOSE_REASON = "ping_timeout"
# a connection that is never quiet still gets a ping (an RTT sample) this often
RTT_REFRESH_S = 30.0
JITTER = 0.1  # of p2p.ping_interval_s, between looks


class LivenessService:
    name = "liveness"

    def __init__(self) -> None:
        self.rt: NodeRuntime | None = None
        self._watching: set[int] = set()  # id(conn) with a ping loop
        self._rtts: dict[int, deque[float]] = {}
        self._rx_at: dict[int, float] = {}  # id(conn) -> monotonic time data last arrived
        # id(conn) -> its open ping stream and when its last ping was answered
        self._streams: dict[int, tuple[Any, float]] = {}
        self.closed = 0  # connections closed for not answering
        self.skipped = 0  # looks that needed no ping: the peer had sent something

    def status(self) -> dict[str, Any]:
        rt = self.rt
        cfg = rt.config.p2p if rt is not None else None
        return Liveness(
            interval_s=cfg.ping_interval_s if cfg else None,
            timeout_s=cfg.ping_timeout_s if cfg else None,
            failures=cfg.ping_failures if cfg else None,
            watching=len(self._watching),
            closed=self.closed,
            skipped=self.skipped,
        ).to_json()

    async def run(self, rt: NodeRuntime) -> None:
        self.rt = rt
        rt.connections.subscribe(self._on_conn)
        for info in rt.connections.all():  # connections made before we subscribed
            self._watch(info)
        await trio.sleep_forever()

    def _on_conn(self, event: str, info: ConnInfo) -> None:
        if event == "opened":
            self._watch(info)

    def _watch(self, info: ConnInfo) -> None:
        assert self.rt is not None
        key = id(info.conn)
        if key in self._watching:
            return
        self._watching.add(key)
        self._count_rx(info)
        self.rt.nursery.start_soon(self._loop, info)

    def _count_rx(self, info: ConnInfo) -> None:
        """Note when bytes arrive on the connection (node/overrides/read_watch.py): any of
        them shows the peer is alive."""
        key = id(info.conn)
        rx_at = self._rx_at

        def arrived() -> None:
            rx_at[key] = time.monotonic()

        watch_reads(info.conn, arrived)

    async def _loop(self, info: ConnInfo) -> None:
        assert self.rt is not None
        rt = self.rt
        cfg = rt.config.p2p
        key = id(info.conn)
        try:
            # the first ping one interval in: identify, DCUtR and the duplicate rule settle
            # first, and a connection still being upgraded is never pinged
            await trio.sleep(cfg.ping_interval_s)
            # data from the peer after this moment shows it is alive (a pong to our own
            # ping arrives before the moment is moved past it, so it does not count)
            heard_since = time.monotonic()
            rtt_at: float | None = None  # when our last ping was answered
            while rt.connections.is_live(info.conn):
                if not _ready(info):
                    await trio.sleep(cfg.ping_interval_s)
                    continue
                t0 = time.monotonic()
                heard = self._rx_at.get(key, 0.0) > heard_since
                if heard and rtt_at is not None and t0 - rtt_at < RTT_REFRESH_S:
                    self.skipped += 1
                    info.ping_failures = 0
                    heard_since = t0
                    await trio.sleep(_jittered(cfg.ping_interval_s))
                    continue
                rtt, error = await self._ping(info, cfg.ping_timeout_s)
                if not rt.connections.is_live(info.conn):
                    break  # closed under the ping: not the peer's silence
                if rtt is not None:
                    self._record(info, rtt)
                    rtt_at = heard_since = time.monotonic()
                    await trio.sleep(max(0.0, _jittered(cfg.ping_interval_s) - (rtt_at - t0)))
                    continue
                if self._rx_at.get(key, 0.0) > t0:
                    log.info(
                        "ping to %s (%s) unanswered but data arrived meanwhile: slow, alive (%s)",
                        info.peer,
                        info.kind,
                        error,
                    )
                    info.ping_failures = 0
                    # A peer that ends the ping stream at once answered the negotiation in
                    # milliseconds: without this wait the loop pinged again at once, one
                    # stream negotiation per round trip on both ends (1257 in 6 s on
                    # loopback; dozens a second to busy sentries at 64 nodes).
                    await _rest_of_interval(t0, cfg.ping_interval_s)
                    continue
                info.ping_failures += 1
                rt.metrics.ping_failures_total.labels(kind=info.kind).inc()
                log.info(
                    "ping %d/%d to %s (%s %s) failed: %s",
                    info.ping_failures,
                    cfg.ping_failures,
                    info.peer,
                    info.kind,
                    info.remote_addr,
                    error,
                )
                if info.ping_failures >= cfg.ping_failures:
                    self.closed += 1
                    log.warning(
                        "closing %s connection to %s (%s): %d pings unanswered",
                        info.kind,
                        info.peer,
                        info.remote_addr,
                        info.ping_failures,
                    )
                    await rt.connections.close(info.conn, CLOSE_REASON)
                    break
                # a miss: the next ping follows at once (a timeout already waited)
                await _rest_of_interval(t0, cfg.ping_interval_s)
        finally:
            self._watching.discard(key)
            self._rtts.pop(key, None)
            self._rx_at.pop(key, None)
            with trio.CancelScope(shield=True):
                await self._end_stream(key)

    def _record(self, info: ConnInfo, rtt: float) -> None:
        assert self.rt is not None
        window = self._rtts.setdefault(id(info.conn), deque(maxlen=RTT_WINDOW))
        window.append(rtt)
        info.rtt_s = round(rtt, 6)
        info.rtt_median_s = round(statistics.median(window), 6)
        info.pings_ok += 1
        info.ping_failures = 0
        self.rt.metrics.ping_rtt_seconds.labels(kind=info.kind).observe(rtt)

    async def _ping(self, info: ConnInfo, timeout: float) -> tuple[float | None, str]:
        """One ping on exactly this connection: (rtt seconds, "") or (None, why).

        The ping stream stays open for the next ping (the responder loops until EOF, as
        the ping spec allows and go- and rust-libp2p do): opening a stream per ping cost
        a stream negotiation on both ends every interval on every connection, the
        largest fixed cost of a node with many peers. A ping that fails resets its
        stream; the next one opens a fresh stream."""
        assert self.rt is not None
        host: Any = self.rt.host
        key = id(info.conn)
        stream, used_at = self._streams.get(key, (None, 0.0))
        if stream is not None and time.monotonic() - used_at > STREAM_IDLE_S:
            await self._end_stream(key)  # the responder may have closed it by now
            stream = None
        try:
            with trio.fail_after(timeout):
                if stream is None:
                    stream = await open_stream_on(host, info.conn, [PING_ID], timeout)
                t0 = time.monotonic()
                await perform_ping_roundtrip(stream)
                rtt = time.monotonic() - t0
            self._streams[key] = (stream, time.monotonic())
        except trio.TooSlowError:
            await self._drop_stream(key, stream)
            return None, f"no answer within {timeout:g}s"
        except Exception as exc:
            await self._drop_stream(key, stream)
            return None, f"{type(exc).__name__}: {exc}"
        return rtt, ""

    async def _drop_stream(self, key: int, stream: Any) -> None:
        self._streams.pop(key, None)
        await _reset(stream)

    async def _end_stream(self, key: int) -> None:
        """Close a connection's ping stream (EOF ends the responder's loop)."""
        stream, _ = self._streams.pop(key, (None, 0.0))
        if stream is not None:
            with contextlib.suppress(Exception), trio.move_on_after(2):
                await stream.close()


def _jittered(interval: float) -> float:
    """The interval give or take a tenth. Both ends of a connection start looking at it
    when it opens: at equal periods they would ping at the same moments, each while its
    own ping is under way, so neither would count the other's and both would keep
    pinging a quiet connection."""
    return interval * random.uniform(1 - JITTER, 1 + JITTER)


async def _rest_of_interval(t0: float, interval: float) -> None:
    """Sleep until `interval` after `t0`; at once if a ping timeout already waited that."""
    left = interval - (time.monotonic() - t0)
    if left > 0:
        await trio.sleep(left)


def _ready(info: ConnInfo) -> bool:
    """The connection finished its upgrade (muxer started): pinging it makes sense."""
    muxed = getattr(info.conn, "muxed_conn", None)
    started = getattr(muxed, "event_started", None)
    if isinstance(started, trio.Event) and not started.is_set():
        return False
    swarm_started = getattr(info.conn, "event_started", None)
    return not (isinstance(swarm_started, trio.Event) and not swarm_started.is_set())


async def _reset(stream: Any) -> None:
    if stream is None:
        return
    with contextlib.suppress(Exception), trio.move_on_after(2):
        await stream.reset()
