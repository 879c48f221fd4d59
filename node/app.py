"""Node lifecycle: config -> key -> host -> services -> API -> run until SIGTERM/SIGINT.

`run(path) -> int` is what `python -m node --config FILE` calls. Exit codes: 0 clean
shutdown, 2 invalid config (message names the key), 1 anything else fatal (among them an
installed py-libp2p that node/overrides was not written against: node/overrides/upstream).
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from typing import Any

import multiaddr
import trio
from libp2p.crypto.keys import KeyPair
from libp2p.tools.anyio_service import background_trio_service

from node import overrides
from node.api import APIServer
from node.chain.service import ChainService
from node.config import ConfigError, NodeConfig, load_config
from node.contract import Status
from node.dcutr.service import HolePunchService
from node.dialing import NodeDialer
from node.discovery import DiscoveryService
from node.events import EventLog
from node.host import build_host, build_pubsub, load_or_create_key
from node.listen import ListenFailed, check_listening
from node.liveness import LivenessService
from node.metrics import Metrics
from node.output import OffLoopWriter
from node.overrides.upstream import UpstreamMismatch
from node.overrides.upstream import check as check_upstream
from node.relay.client import RelayClient
from node.relay.server import RelayServer
from node.relay.stop import StopHandler
from node.runtime import ConnectionTracker, GuardedNursery, NodeRuntime, Service

log = logging.getLogger("sentrynet.node")


def _other_services(cfg: NodeConfig) -> list[Service]:
    """DCUtR (when [dcutr] enabled) and the chain (it disables itself without validators)."""
    out: list[Service] = []
    if cfg.dcutr.enabled:
        out.append(HolePunchService())
    out.append(ChainService())
    return out


def run(path: str) -> int:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO,
        stream=OffLoopWriter(sys.stderr),  # never on trio's thread (node/output.py)
        format=f"%(asctime)s {cfg.node.name} %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("libp2p", "multiaddr", "async_service"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    try:
        check_upstream()  # node/overrides relies on py-libp2p internals: are they there?
    except UpstreamMismatch as exc:
        print(f"node error: {exc}", file=sys.stderr)
        return 1
    try:
        key_pair = load_or_create_key(cfg.node.key_file)
    except Exception as exc:  # empty, truncated, not protobuf, not Ed25519, unreadable
        print(
            f"config error: node.key_file: {cfg.node.key_file}: not a usable libp2p private "
            f"key ({type(exc).__name__}: {exc}); remove it to have a new one created, or "
            "render the testnet again",
            file=sys.stderr,
        )
        return 2
    try:
        trio.run(_main, cfg, key_pair)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"node error: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:  # raised inside the host's or our nursery
        failed = group.subgroup(ListenFailed)
        if failed is None:
            raise
        print(f"node error: {_leaves(failed)[0]}", file=sys.stderr)
        return 1
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


class Node:
    """Holds the runtime and the node's own services; builds /status."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.events = EventLog(cfg.node.name, stream=OffLoopWriter(sys.stdout))
        self.metrics = Metrics()
        self.tracker = ConnectionTracker(self.events, self.metrics)
        self.relay_client = RelayClient() if cfg.relay.is_client else None
        self.relay_server = RelayServer() if cfg.relay.is_server else None
        self.stop = StopHandler() if cfg.relay.enabled else None
        self.discovery = DiscoveryService()
        self.rt: NodeRuntime | None = None
        self.started_at = time.monotonic()
        self.handler_errors: dict[str, int] = {}  # protocol -> stream handlers that raised

    def handler_failed(self, protocol: str, exc: BaseException) -> None:
        """A stream handler raised (node/overrides/stream_guard.py reset the stream):
        counted, so a bug is seen in /status, the metrics and the events, not lost."""
        self.handler_errors[protocol] = self.handler_errors.get(protocol, 0) + 1
        self.metrics.stream_handler_errors_total.labels(protocol=protocol).inc()
        detail = f"{type(exc).__name__}: {exc}"[:300]
        self.events.emit("stream_handler_error", protocol=protocol, detail=detail)

    def circuit_addrs(self) -> list[multiaddr.Multiaddr]:
        """`<relay>/p2p/<relay>/p2p-circuit` for every reservation held (advertised)."""
        return self.relay_client.circuit_addrs() if self.relay_client is not None else []

    def status(self) -> dict[str, Any]:
        """GET /status: every row is built from its node/contract.py record; the document
        goes through `Status` so it has the contract's shape (keys outside it: `extra`)."""
        return Status.from_json(self._status_doc()).to_json()

    def _status_doc(self) -> dict[str, Any]:
        rt = self.rt
        now = time.monotonic()
        doc: dict[str, Any] = {
            "name": self.cfg.node.name,
            "role": self.cfg.node.role,
            "started_at": round(self.started_at, 4),
            "uptime_s": round(now - self.started_at, 3),
            "peer_id": "",
            "listen_addrs": list(self.cfg.p2p.listen_addrs),
            "advertised_addrs": [],
            "observed_addrs": [],
            "reservations": [],
            "relay_candidates": [],
            "connections": [],
            "circuits": [],
            "dcutr": [],
            "chain": None,
            "rejected": {"hop": 0, "stop": 0, "dcutr": 0, "sync": 0, "consensus": 0},
            # every service that says whether it is set up (the chain: its store is open)
            "ready": rt is not None
            and all(getattr(svc, "ready", True) for svc in list(rt.services.values())),
        }
        if rt is None:
            return doc
        doc["peer_id"] = str(rt.host.get_id())
        doc["listen_addrs"] = [str(a) for a in rt.host.get_transport_addrs()]
        doc["advertised_addrs"] = [str(a) for a in rt.host.get_addrs()]
        hole_punch = rt.services.get("dcutr")
        if isinstance(hole_punch, HolePunchService):
            doc["observed_addrs"] = hole_punch.observed_addrs()
        doc["connections"] = self.tracker.snapshot()
        if self.relay_client is not None:
            doc["reservations"] = self.relay_client.reservations_json()
            doc["relay_candidates"] = self.relay_client.candidates_json()
        circuits: list[dict[str, Any]] = []
        if self.relay_server is not None:
            circuits += self.relay_server.circuits_json()
        doc["circuits"] = circuits
        doc["rejected"] = dict(rt.rejected)
        doc["handler_errors"] = dict(self.handler_errors)
        doc["peers_known"] = self.discovery.known_json()
        # peers with an open gossipsub stream (shows pubsub runs over relayed connections)
        doc["pubsub_peers"] = sorted(str(p) for p in list(getattr(rt.pubsub, "peers", {})))
        for name, svc in rt.services.items():
            if name in ("relay_client", "stop", "discovery"):
                continue
            doc[name] = svc.status()
        return doc


async def _main(cfg: NodeConfig, key_pair: KeyPair) -> None:
    node = Node(cfg)
    host = build_host(cfg, key_pair, addrs_factory=None)
    node.tracker.local_peer = host.get_id()
    host.get_network().register_notifee(node.tracker)

    # Pubsub must exist before the first connection so it sees every peer.
    pubsub, gossipsub = build_pubsub(host)
    dialer = NodeDialer(host, node.tracker)
    identify_hook = overrides.apply(
        host,
        pubsub,
        dialer,
        circuit_addrs=node.circuit_addrs,
        on_handler_error=node.handler_failed,
    )

    api = APIServer(cfg.api.host_port, node.status, node.events, node.metrics)
    listen = [multiaddr.Multiaddr(a) for a in cfg.p2p.listen_addrs]
    async with host.run(listen_addrs=listen), trio.open_nursery() as nursery:
        check_listening(listen, host.get_transport_addrs())
        guarded = GuardedNursery(nursery)
        node.tracker.nursery = guarded
        async with background_trio_service(pubsub), background_trio_service(gossipsub):
            rt = NodeRuntime(
                config=cfg,
                host=host,
                pubsub=pubsub,
                events=node.events,
                metrics=node.metrics,
                connections=node.tracker,
                dialer=dialer,
                nursery=guarded,
                started_at=node.started_at,
                identify_hook=identify_hook,
            )
            dialer.bind(rt)
            own: list[Service] = []
            if node.stop is not None:
                own.append(node.stop)
            if node.relay_server is not None:
                own.append(node.relay_server)
            if node.relay_client is not None:
                own.append(node.relay_client)
            own.append(node.discovery)
            own.append(LivenessService())  # closes connections that stopped answering
            for svc in own + _other_services(cfg):
                rt.services[svc.name] = svc
            node.rt = rt
            for svc in rt.services.values():
                nursery.start_soon(_run_service, svc, rt)
            api.start()
            log.info(
                "node %s (%s) peer_id=%s listening on %s, api on http://%s:%d",
                cfg.node.name,
                cfg.node.role,
                host.get_id(),
                ", ".join(cfg.p2p.listen_addrs),
                *api.address,
            )
            try:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                    async for sig in sigs:
                        log.info("signal %s: shutting down", signal.Signals(sig).name)
                        break
            finally:
                api.stop()
                nursery.cancel_scope.cancel()


async def _run_service(svc: Service, rt: NodeRuntime) -> None:
    try:
        await svc.run(rt)
    except trio.Cancelled:
        raise
    except Exception:
        log.exception("service %s crashed", svc.name)
