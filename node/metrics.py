"""Prometheus metrics (docs/contracts.md section 2), on a private registry.

Every contract metric exists here, so every module (relay, DCUtR, chain) just uses it.
A private CollectorRegistry keeps py-libp2p's own global collectors out of /metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "sentrynet_"


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        p = PREFIX
        self.reservations_active = Gauge(
            p + "reservations_active",
            "reservations this node holds on relays plus those it grants as a relay",
            registry=r,
        )
        self.circuits_active = Gauge(
            p + "circuits_active", "circuits open that this node relays or ends", registry=r
        )
        self.relayed_bytes_total = Counter(
            p + "relayed_bytes_total", "bytes forwarded through circuits by this relay", registry=r
        )
        self.reservations_total = Counter(
            p + "reservations_total",
            "reservation attempts by outcome (accepted|denied|refused|error|expired)",
            ["outcome"],
            registry=r,
        )
        self.circuits_total = Counter(
            p + "circuits_total",
            "circuit attempts by outcome (opened|denied|failed|closed|limit)",
            ["outcome"],
            registry=r,
        )
        self.dcutr_total = Counter(
            p + "dcutr_total", "DCUtR attempts by outcome", ["outcome"], registry=r
        )
        self.holepunch_duration_seconds = Histogram(
            p + "holepunch_duration_seconds",
            "time from DCUtR start to a direct connection",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60),
            registry=r,
        )
        self.messages_rejected_total = Counter(
            p + "messages_rejected_total",
            "malformed or invalid protocol messages rejected",
            ["protocol", "reason"],
            registry=r,
        )
        self.stream_handler_errors_total = Counter(
            p + "stream_handler_errors_total",
            "inbound streams whose handler raised (reset; the node goes on): bugs, not input",
            ["protocol"],
            registry=r,
        )
        self.connections_active = Gauge(
            p + "connections_active", "open connections by kind", ["kind"], registry=r
        )
        self.chain_height = Gauge(p + "chain_height", "committed chain height", registry=r)
        self.blocks_synced_total = Counter(
            p + "blocks_synced_total",
            "blocks received through the sync protocol, by connection kind",
            ["kind"],
            registry=r,
        )
        self.ping_rtt_seconds = Histogram(
            p + "ping_rtt_seconds",
            "ping (/ipfs/ping/1.0.0) round trips on open connections, by connection kind",
            ["kind"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.ping_failures_total = Counter(
            p + "ping_failures_total",
            "pings unanswered within p2p.ping_timeout_s (or failed), by connection kind",
            ["kind"],
            registry=r,
        )
        self.px_asked_total = Counter(
            p + "px_asked_total",
            "peer exchange requests this node made, by answer (changed: parsed; unchanged: "
            "the same bytes as that peer's last answer, not parsed again; none: the stream "
            "ended before any byte)",
            ["answer"],
            registry=r,
        )
        self.px_served_total = Counter(
            p + "px_served_total", "peer exchange requests this node answered", registry=r
        )
        self.sync_polls_total = Counter(
            p + "sync_polls_total",
            "chain tip polls, by scope (sample: the routine few peers; all: every peer, "
            "when behind, stalled with no poll of every peer at this height yet, or hinted)",
            ["scope"],
            registry=r,
        )
        for kind in ("direct", "relayed"):
            self.connections_active.labels(kind=kind).set(0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
