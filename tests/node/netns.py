"""A NAT lab in network namespaces: real routers, real MASQUERADE, no Docker.

    lab = NatLab()                                   # or the `nat_lab` fixture
    relay = lab.add_public_host("relay")             # on the public segment
    r1 = lab.add_router("r1")                        # cone NAT (port preserving)
    r2 = lab.add_router("r2", symmetric=True)        # MASQUERADE --random-fully
    a = lab.add_private_host("a", r1)                # behind r1, default route via r1
    node = lab.start_node(a, relay={...})            # a node process inside `a`
    lab.cleanup()                                    # always (the fixture does it)

Layout (mirrors the Docker testnet and the router recipe of docs/design.md "NAT routers"):
- namespace `<id>-pub` holds the public bridge; public hosts and routers' WAN sides are
  on 100.64.0.0/24. Nobody has a default route there: nothing can leave the lab.
- each router namespace: `wan0` (public), bridge `lan` 10.<n>.0.1/24 to its hosts,
  ip_forward=1 and exactly that iptables recipe: MASQUERADE out of wan0
  (`--random-fully` for symmetric NAT), ESTABLISHED,RELATED accepted and everything else
  DROPPED (not rejected: a RST kills a hole punch) on wan0, for FORWARD and INPUT.
- private hosts: `eth0` 10.<n>.0.<k>/24, default route via their router.
- control: every host namespace gets a veth `ctl0` to the root namespace on its own /30
  out of 198.18.0.0/15 (RFC 2544 benchmarking space), so the test process reaches the
  node's HTTP API directly. Like the harness's control network, p2p never uses it: the
  hosts have no route from it to anything but the root end of their own /30.

Names carry a random id (namespaces `sn<id>-<name>`, root-side veths `sn<id>c<n>`), so
concurrent runs never clash. `cleanup()` kills the lab's processes and deletes its
namespaces (which deletes every veth and iptables rule in them); it is registered with
atexit as well, so an interrupted run cleans up too; while a lab exists, SIGTERM (a CI job's
timeout, `kill`) raises KeyboardInterrupt in the main thread, as Ctrl-C does, so the `with`
block or fixture unwinds into `cleanup()` (the default SIGTERM would end the process with
no atexit and leave every namespace behind). A run killed outright (SIGKILL) leaves
a marker `/run/sentrynet-netns/<id>` with its pid: the next lab reaps labs whose owner is
gone (`reap_stale_labs`). Needs root.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from testkit.procs import REPO, NodeProc, wait_for, write_node_config

PUBLIC_NET = ipaddress.IPv4Network("100.64.0.0/24")
CONTROL_SPACE = ipaddress.IPv4Network("198.18.0.0/15")
P2P_PORT = 4001
API_PORT = 9000
MARKERS = Path("/run/sentrynet-netns")


class LabError(RuntimeError):
    pass


def netns_available() -> str | None:
    """None when this process can build the lab, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found"
    return None


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(argv), capture_output=True, text=True)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(argv)} -> rc={p.returncode}: {p.stderr.strip()}")
    return p


def _delete_ns(ns: str) -> None:
    """Kill whatever runs in `ns` (it would keep the namespace alive), then delete it."""
    for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    sh("ip", "netns", "del", ns, check=False)


def reap_stale_labs() -> list[str]:
    """Delete the namespaces of labs whose owning process is gone; returns their names."""
    if not MARKERS.is_dir():
        return []
    listed = [ln.split()[0] for ln in sh("ip", "netns", "list", check=False).stdout.splitlines()]
    reaped: list[str] = []
    for marker in MARKERS.iterdir():
        try:
            os.kill(int(marker.read_text().strip()), 0)
            continue  # owner alive
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue
        for ns in listed:
            if ns.startswith(f"sn{marker.name}-"):
                _delete_ns(ns)
                reaped.append(ns)
        marker.unlink(missing_ok=True)
    return reaped


@dataclass
class Host:
    name: str
    ns: str
    ip: str  # data-plane address (p2p)
    control_ip: str | None = None  # reachable from the test process
    router: Router | None = None
    public_ip: str | None = None  # a dual-homed host's address on the public segment

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns, *argv, check=check)


@dataclass
class Router:
    name: str
    ns: str
    public_ip: str
    lan: ipaddress.IPv4Network
    symmetric: bool
    hosts: list[Host] = field(default_factory=list)

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns, *argv, check=check)

    def conntrack_drops(self) -> str:
        """The router's iptables counters (what was dropped on wan0), for failure reports."""
        return self.exec("iptables", "-L", "-v", "-n", check=False).stdout


@dataclass
class LabNode(NodeProc):
    """A node process inside a lab namespace: p2p on the data IP, API on the control IP."""

    host: Host | None = None

    @property
    def p2p_addr(self) -> str:
        assert self.host is not None
        return f"/ip4/{self.host.ip}/tcp/{self.p2p_port}"


class Terminated(KeyboardInterrupt):
    """SIGTERM while a lab exists: unwinds like Ctrl-C, through cleanup()."""


def _sigterm_raises() -> Any:
    """Make SIGTERM raise Terminated in the main thread when it would otherwise end the
    process outright (its default); returns the handler to put back, or None when another
    handler (the sentrynet pytest plugin's, a caller's) is already there or this is not
    the main thread."""
    try:
        if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
            return None

        def raise_terminated(signum: int, frame: object) -> None:
            raise Terminated(f"signal {signum} (SIGTERM): removing the netns lab")

        return signal.signal(signal.SIGTERM, raise_terminated)
    except ValueError:
        return None


class NatLab:
    def __init__(self, workdir: Path | None = None) -> None:
        err = netns_available()
        if err:
            raise LabError(err)
        self.id = secrets.token_hex(3)
        self.prefix = f"sn{self.id}"
        # our own scratch dir (no workdir given) goes with the lab; a caller's stays theirs
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(f"/tmp/{self.prefix}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.nodes: list[LabNode] = []
        self.routers: list[Router] = []
        self.hosts: list[Host] = []
        self._pub_hosts = 0
        self._ctl_n = 0
        self._control = self._pick_control_net()
        self._closed = False
        reap_stale_labs()
        MARKERS.mkdir(parents=True, exist_ok=True)
        (MARKERS / self.id).write_text(str(os.getpid()))
        atexit.register(self.cleanup)
        self._prev_sigterm = _sigterm_raises()
        try:
            self.pub_ns = self._add_ns("pub")
            self._in(self.pub_ns, "ip", "link", "add", "pubbr", "type", "bridge")
            self._in(self.pub_ns, "ip", "link", "set", "pubbr", "up")
        except BaseException:
            self.cleanup()
            raise

    # -- building --
    def add_router(self, name: str, symmetric: bool = False) -> Router:
        """A NAT router with its WAN side on the public segment (the recipe of docs/design.md
        "NAT routers")."""
        ns = self._add_ns(name)
        n = len(self.routers) + 1
        public_ip = str(PUBLIC_NET.network_address + 10 + n)
        self._wire_public(ns, "wan0", public_ip)
        lan = ipaddress.IPv4Network(f"10.{n}.0.0/24")
        self._in(ns, "ip", "link", "add", "lan", "type", "bridge")
        self._in(ns, "ip", "addr", "add", f"{lan.network_address + 1}/24", "dev", "lan")
        self._in(ns, "ip", "link", "set", "lan", "up")
        self._in(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        masq = ["-j", "MASQUERADE"] + (["--random-fully"] if symmetric else [])
        ipt = ("ip", "netns", "exec", ns, "iptables")
        sh(*ipt, "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", *masq)
        for chain in ("FORWARD", "INPUT"):
            sh(*ipt, "-A", chain, "-i", "wan0", "-m", "state", "--state",
               "ESTABLISHED,RELATED", "-j", "ACCEPT")  # fmt: skip
            sh(*ipt, "-A", chain, "-i", "wan0", "-j", "DROP")
        r = Router(name, ns, public_ip, lan, symmetric)
        self.routers.append(r)
        return r

    def add_private_host(self, name: str, router: Router) -> Host:
        """A host behind `router` (its own namespace, default route via the router)."""
        ns = self._add_ns(name)
        ip = self._join_lan(ns, router)
        self._in(ns, "ip", "route", "add", "default", "via", str(router.lan.network_address + 1))
        h = Host(name, ns, ip, self._wire_control(ns), router)
        router.hosts.append(h)
        self.hosts.append(h)
        return h

    def add_dual_host(self, name: str, router: Router) -> Host:
        """A host on `router`'s private LAN and on the public segment, with no default
        route (as a sentry on a private network and the public one: docs/design.md)."""
        ns = self._add_ns(name)
        ip = self._join_lan(ns, router)
        self._pub_hosts += 1
        pub = str(PUBLIC_NET.network_address + 100 + self._pub_hosts)
        self._wire_public(ns, "eth1", pub)
        h = Host(name, ns, ip, self._wire_control(ns), router, public_ip=pub)
        router.hosts.append(h)
        self.hosts.append(h)
        return h

    def add_public_host(self, name: str) -> Host:
        """A host on the public segment (e.g. the relay): reachable by every router."""
        ns = self._add_ns(name)
        self._pub_hosts += 1
        ip = str(PUBLIC_NET.network_address + 100 + self._pub_hosts)
        self._wire_public(ns, "eth0", ip)
        h = Host(name, ns, ip, self._wire_control(ns))
        self.hosts.append(h)
        return h

    # -- running --
    def run(
        self, host: Host | Router, argv: list[str], log_path: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `argv` inside the host's namespace; killed by cleanup()."""
        out: Any = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            p = subprocess.Popen(
                ["ip", "netns", "exec", host.ns, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(REPO),
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                start_new_session=True,
            )
        finally:
            if log_path:
                out.close()
        self.procs.append(p)
        return p

    def start_node(
        self,
        host: Host,
        wait_ready: bool = True,
        command: Callable[[Path], list[str]] | None = None,
        key: bytes | None = None,
        **sections: dict[str, Any],
    ) -> LabNode:
        """Write a node config for `host` (p2p on its data IP, API on its control IP) and
        run `python -m node` in its namespace, or `command(config_path)` (another
        implementation reading the same node.toml). `key`: the node key file's bytes (a
        peer id known before the node starts), else the node makes one. Returns a
        testkit.procs.NodeProc."""
        assert host.control_ip is not None
        d = self.workdir / host.name
        if key is not None:
            d.mkdir(parents=True, exist_ok=True)
            (d / "node.key").write_bytes(key)
        listen = [f"/ip4/{ip}/tcp/{P2P_PORT}" for ip in (host.ip, host.public_ip) if ip]
        p2p = {"listen_addrs": listen, **sections.get("p2p", {})}
        doc, path = write_node_config(
            d,
            host.name,
            listen[0],
            f"{host.control_ip}:{API_PORT}",
            {**sections, "p2p": p2p},
        )
        node = LabNode(
            name=host.name,
            ip=host.control_ip,
            p2p_port=P2P_PORT,
            api_port=API_PORT,
            config_path=path,
            log_path=d / "node.log",
            config=doc,
            host=host,
        )
        argv = command(path) if command else [sys.executable, "-m", "node", "--config", str(path)]
        node.proc = self.run(host, argv, node.log_path)
        self.nodes.append(node)
        if wait_ready:
            wait_for(node, lambda s: s.get("ready") and s.get("peer_id"), "ready node", 30)
        return node

    # -- teardown --
    def cleanup(self) -> None:
        """Kill the lab's processes, delete its namespaces. Idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        owned = getattr(self, "_prev_sigterm", None) is not None
        if owned:  # a second SIGTERM must not cut the cleanup short
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(p.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(5)
        # the root ends of the control veths first: a deleted namespace takes its veth pairs
        # with it only when the kernel's netns cleanup runs, a moment later
        for n in range(self._ctl_n):
            sh("ip", "link", "del", f"{self.prefix}c{n}", check=False)
        for ns in reversed(self.namespaces):
            _delete_ns(ns)
        self.namespaces.clear()
        (MARKERS / self.id).unlink(missing_ok=True)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.cleanup)
        if owned:
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(signal.SIGTERM, self._prev_sigterm)

    def __enter__(self) -> NatLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def describe(self) -> str:
        """Routers' iptables counters: the first thing to read when a punch fails."""
        parts = []
        for r in self.routers:
            kind = "symmetric" if r.symmetric else "cone"
            parts.append(f"--- router {r.name} ({kind}, {r.public_ip})\n{r.conntrack_drops()}")
        return "\n".join(parts)

    # -- internals --
    def _join_lan(self, ns: str, router: Router) -> str:
        """eth0 of `ns` on `router`'s LAN bridge, at the next free host address."""
        k = len(router.hosts) + 2
        ip = str(router.lan.network_address + k)
        self._veth(ns, "eth0", router.ns, f"h{k}")
        self._in(router.ns, "ip", "link", "set", f"h{k}", "master", "lan")
        self._in(router.ns, "ip", "link", "set", f"h{k}", "up")
        self._in(ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        self._in(ns, "ip", "link", "set", "eth0", "up")
        return ip

    def _add_ns(self, name: str) -> str:
        ns = f"{self.prefix}-{name}"
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        self._in(ns, "ip", "link", "set", "lo", "up")
        return ns

    def _in(self, ns: str, *argv: str) -> None:
        sh("ip", "netns", "exec", ns, *argv)

    def _veth(self, ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
        sh("ip", "link", "add", name_a, "netns", ns_a, "type", "veth",
           "peer", "name", name_b, "netns", ns_b)  # fmt: skip

    def _wire_public(self, ns: str, ifname: str, ip: str) -> None:
        port = f"p{len(self.namespaces)}"
        self._veth(ns, ifname, self.pub_ns, port)
        self._in(self.pub_ns, "ip", "link", "set", port, "master", "pubbr")
        self._in(self.pub_ns, "ip", "link", "set", port, "up")
        self._in(ns, "ip", "addr", "add", f"{ip}/{PUBLIC_NET.prefixlen}", "dev", ifname)
        self._in(ns, "ip", "link", "set", ifname, "up")

    def _wire_control(self, ns: str) -> str:
        """veth ns:ctl0 <-> root:sn<id>c<n> on its own /30; returns the namespace-side IP."""
        n = self._ctl_n
        self._ctl_n += 1
        net = list(self._control.subnets(new_prefix=30))[n]
        root_ip, ns_ip = str(net.network_address + 1), str(net.network_address + 2)
        root_if = f"{self.prefix}c{n}"
        sh("ip", "link", "add", root_if, "type", "veth", "peer", "name", "ctl0", "netns", ns)
        sh("ip", "addr", "add", f"{root_ip}/30", "dev", root_if)
        sh("ip", "link", "set", root_if, "up")
        self._in(ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", "ctl0")
        self._in(ns, "ip", "link", "set", "ctl0", "up")
        return ns_ip

    def _pick_control_net(self) -> ipaddress.IPv4Network:
        """A /24 of 198.18.0.0/15 that no root-namespace route covers yet."""
        used = sh("ip", "-4", "route", "show", check=False).stdout
        nets = list(CONTROL_SPACE.subnets(new_prefix=24))
        start = secrets.randbelow(len(nets))
        for i in range(len(nets)):
            net = nets[(start + i) % len(nets)]
            if str(net.network_address)[:-1] not in used:
                return net
        raise LabError("no free /24 in 198.18.0.0/15 for the control network")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
def nat_lab(tmp_path: Path) -> Iterator[NatLab]:
    """A lab for one test, cleaned up after it. Without root it skips locally (reason shown
    by -ra) but FAILS with CI=true: CI runs as root, so a missing lab there is a broken CI.
    Conftests re-export it (`from netns import nat_lab`)."""
    reason = netns_available()
    if reason is not None:
        if _in_ci():
            pytest.fail(f"{reason} (CI=true: netns tests must run, they may not skip)")
        pytest.skip(reason)
    lab = NatLab(tmp_path / "lab")
    try:
        yield lab
    finally:
        lab.cleanup()
