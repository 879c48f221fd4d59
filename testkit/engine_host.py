"""A second Docker engine on this machine, standing in for a second host of a swarm.

A multi-host swarm needs engines with their own network stacks that reach each other over
a link. Here that is a `dockerd` of its own (data root, exec root, socket and containerd
under a temporary directory) in a network namespace of its own, joined to the host by a
veth pair on a /30 that no route of the machine uses: the host's engine and this one talk
over that link exactly as two hosts talk over a LAN (swarm control on 2377, gossip on 7946,
VXLAN on 4789), and nothing of it leaves the machine. `stop` removes all of it again: the
daemon, what it stored, the namespace and the link.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker

from harness.errors import SentrynetError
from harness.infra import docker as docker_ops
from harness.infra.images import mounts_under, remove_rootfs
from harness.wait import wait_until

LINK_POOL = "10.99.0.0/16"  # /30 links for the host <-> engine-host veth
START_DEADLINE_S = 60.0


def missing_tools() -> list[str]:
    """What this machine lacks to run a second engine (empty: it can)."""
    out = [t for t in ("dockerd", "nsenter", "ip") if shutil.which(t) is None]
    if os.geteuid() != 0:
        out.append("root (network namespaces and a second dockerd)")
    return out


def _free_link() -> ipaddress.IPv4Network:
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    used = []
    for line in routes.splitlines():
        dest = line.split()[0] if line.split() else ""
        if "/" in dest:
            used.append(ipaddress.ip_network(dest, strict=False))
    used += [n for n in docker_ops.subnets_in_use() if n.version == 4]
    start = os.getpid() % 16000
    links = list(ipaddress.IPv4Network(LINK_POOL).subnets(new_prefix=30))
    for i in range(len(links)):
        cand = links[(start + i) % len(links)]
        if not any(cand.overlaps(u) for u in used):
            return cand
    raise SentrynetError(f"no free /30 in {LINK_POOL} for a second engine's link")


@dataclass
class EngineHost:
    """A dockerd in its own network namespace; `host_ip` is this machine's end of the link,
    `ip` the engine host's."""

    name: str
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sentrynet-host-")))
    link: ipaddress.IPv4Network | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def netns(self) -> str:
        return self.name

    @property
    def veth(self) -> tuple[str, str]:
        return f"{self.name[:11]}a", f"{self.name[:11]}b"

    @property
    def host_ip(self) -> str:
        assert self.link is not None
        return str(self.link.network_address + 1)

    @property
    def ip(self) -> str:
        assert self.link is not None
        return str(self.link.network_address + 2)

    @property
    def url(self) -> str:
        return f"unix://{self.dir}/run/docker.sock"

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=600)

    def start(self) -> EngineHost:
        self.link = _free_link()
        a, b = self.veth
        prefix = self.link.prefixlen
        for argv in (
            ["ip", "netns", "add", self.netns],
            ["ip", "link", "add", a, "type", "veth", "peer", "name", b],
            ["ip", "link", "set", b, "netns", self.netns],
            ["ip", "addr", "add", f"{self.host_ip}/{prefix}", "dev", a],
            ["ip", "link", "set", a, "up"],
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                "ip",
                "addr",
                "add",
                f"{self.ip}/{prefix}",
                "dev",
                b,
            ],
            ["ip", "netns", "exec", self.netns, "ip", "link", "set", b, "up"],
            ["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"],
        ):
            _run(argv)
        for sub in ("root", "exec", "run"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        driver = str(docker_ops.client().info().get("Driver") or "overlay2")
        config = {
            "data-root": str(self.dir / "root"),
            "exec-root": str(self.dir / "exec"),
            "pidfile": str(self.dir / "run" / "docker.pid"),
            "hosts": [self.url],
            "storage-driver": driver,
            "bridge": "none",  # no default bridge: nothing here needs a way out
        }
        (self.dir / "daemon.json").write_text(json.dumps(config))
        log = open(self.dir / "dockerd.log", "wb")  # noqa: SIM115 (the daemon keeps it)
        # nsenter, not `ip netns exec`: that remounts /sys, which hides the cgroup mounts
        # dockerd needs ("Devices cgroup isn't mounted")
        self.proc = subprocess.Popen(
            [
                "nsenter",
                f"--net=/var/run/netns/{self.netns}",
                "dockerd",
                "--config-file",
                str(self.dir / "daemon.json"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(
            self._answers,
            what=f"the second engine {self.name} to answer on {self.url}",
            deadline_s=START_DEADLINE_S,
            likely_cause=f"dockerd failed to start: see {self.dir / 'dockerd.log'}",
            interval_s=0.25,
        )
        return self

    def _answers(self) -> tuple[bool, str]:
        if self.proc is not None and self.proc.poll() is not None:
            tail = (self.dir / "dockerd.log").read_text(errors="replace")[-600:]
            raise SentrynetError(f"second dockerd exited ({self.proc.returncode}):\n{tail}")
        try:
            self.client().ping()
        except Exception as exc:
            return False, str(exc)[:120]
        return True, "answers"

    def stop(self) -> None:
        """Remove the daemon, its containers and images, the namespace and the link."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                c = self.client()
                for ctr in c.containers.list(all=True):
                    ctr.remove(force=True)
                if (c.info().get("Swarm") or {}).get("LocalNodeState") != "inactive":
                    c.swarm.leave(force=True)
            except Exception:  # best effort: the daemon goes anyway
                pass
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.veth[0]], capture_output=True, check=False)
        deadline = time.monotonic() + 10
        while mounts_under(self.dir) and time.monotonic() < deadline:
            time.sleep(0.2)  # containerd's shims unmount as they exit
        remove_rootfs(self.dir)  # unmounts what is left first, never deletes through a mount


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SentrynetError(f"`{' '.join(argv)}` failed: {done.stderr.strip()}")
