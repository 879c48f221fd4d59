"""A container's network state read from outside it: its TCP table and its conntrack table.

Why: a node we did not write serves no sentrynet API, so what it did must be seen from
where it cannot lie: the kernel. Every container has its own network namespace, and the
kernel shows a namespace's TCP sockets in `/proc/<pid>/net/tcp` and its connection tracking
(what a NAT router translated) in `/proc/<pid>/net/nf_conntrack`. Both are read from the
host through the container's init pid, so the image needs no tools at all (no `ss`, no
`conntrack`, not even a shell). Where the host cannot see the engine's pids (a remote
engine), the same files are read with `docker exec cat`, which needs `cat` in the image.

The parsers are pure functions of the file text (unit-tested with captured samples); the
readers return `None` with the reason when a table cannot be read, never a guess.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from docker.models.containers import Container

from harness.infra import docker as docker_ops

# /proc/net/tcp state codes (include/net/tcp_states.h)
TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


@dataclass(frozen=True)
class TcpSocket:
    """One row of a namespace's TCP table."""

    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: str  # ESTABLISHED | LISTEN | SYN_SENT | ... (TCP_STATES)

    def to_json(self) -> dict[str, object]:
        return {
            "local": f"{self.local_ip}:{self.local_port}",
            "remote": f"{self.remote_ip}:{self.remote_port}",
            "state": self.state,
        }

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> TcpSocket:
        lip, lport = str(doc["local"]).rsplit(":", 1)
        rip, rport = str(doc["remote"]).rsplit(":", 1)
        return cls(lip, int(lport), rip, int(rport), str(doc["state"]))


@dataclass(frozen=True)
class Flow:
    """One TCP connection a router's conntrack tracks: the original direction as the
    initiator sent it, and the reply direction as the NAT rewrote it."""

    state: str  # ESTABLISHED | SYN_SENT | TIME_WAIT | ...
    src: str
    sport: int
    dst: str
    dport: int
    reply_src: str
    reply_sport: int
    reply_dst: str
    reply_dport: int

    @property
    def translated(self) -> tuple[str, int]:
        """The public endpoint the router gave the initiator (reply direction's dst)."""
        return self.reply_dst, self.reply_dport

    def to_json(self) -> dict[str, object]:
        return {
            "state": self.state,
            "orig": f"{self.src}:{self.sport}>{self.dst}:{self.dport}",
            "reply": f"{self.reply_src}:{self.reply_sport}>{self.reply_dst}:{self.reply_dport}",
        }

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Flow:
        def split(text: str) -> tuple[str, int, str, int]:
            a, b = text.split(">")
            aip, aport = a.rsplit(":", 1)
            bip, bport = b.rsplit(":", 1)
            return aip, int(aport), bip, int(bport)

        o, r = split(str(doc["orig"])), split(str(doc["reply"]))
        return cls(str(doc["state"]), *o, *r)


def _hex_ipv4_port(field_text: str) -> tuple[str, int]:
    """`0100007F:0FA1` (little-endian IPv4, big-endian port in hex) -> ('127.0.0.1', 4001)."""
    addr_hex, port_hex = field_text.split(":")
    addr = socket.inet_ntoa(struct.pack("<I", int(addr_hex, 16)))
    return addr, int(port_hex, 16)


def parse_proc_tcp(text: str) -> list[TcpSocket]:
    """Rows of /proc/net/tcp (IPv4). Lines that do not parse are skipped (the header)."""
    out: list[TcpSocket] = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4:
            continue
        try:
            lip, lport = _hex_ipv4_port(parts[1])
            rip, rport = _hex_ipv4_port(parts[2])
        except (ValueError, struct.error, OSError):
            continue
        out.append(TcpSocket(lip, lport, rip, rport, TCP_STATES.get(parts[3].upper(), parts[3])))
    return out


def parse_conntrack(text: str) -> list[Flow]:
    """TCP rows of /proc/net/nf_conntrack, e.g.

    ipv4 2 tcp 6 431999 ESTABLISHED src=172.20.0.10 dst=10.0.0.253 sport=4001 dport=4005
    src=10.0.0.253 dst=10.0.0.254 sport=4005 dport=4001 [ASSURED] mark=0 zone=0 use=2
    """
    out: list[Flow] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[0] != "ipv4" or parts[2] != "tcp":
            continue
        state = parts[5] if "=" not in parts[5] else "?"
        kv = [p.split("=", 1) for p in parts if "=" in p]
        src = [v for k, v in kv if k == "src"]
        dst = [v for k, v in kv if k == "dst"]
        sport = [v for k, v in kv if k == "sport"]
        dport = [v for k, v in kv if k == "dport"]
        if min(len(src), len(dst), len(sport), len(dport)) < 2:
            continue
        try:
            for ip in (*src[:2], *dst[:2]):
                ipaddress.IPv4Address(ip)
            flow = Flow(
                state,
                src[0],
                int(sport[0]),
                dst[0],
                int(dport[0]),
                src[1],
                int(sport[1]),
                dst[1],
                int(dport[1]),
            )
        except ValueError:
            continue
        out.append(flow)
    return out


@dataclass(frozen=True)
class Table:
    """What one read gave: the text, or why there is none."""

    text: str | None
    error: str | None = None
    via: str = ""  # "host /proc" | "docker exec"


def read_proc_net(container: Container, name: str) -> Table:
    """`/proc/net/<name>` of the container's network namespace (see the module docstring)."""
    try:
        container.reload()
    except Exception as exc:
        return Table(None, f"container gone: {exc}")
    state = container.attrs.get("State", {})
    if state.get("Status") != "running":
        return Table(None, f"container {state.get('Status', '?')}")
    pid = int(state.get("Pid") or 0)
    # another host's pid names another process here, if any: only a local one is read
    if pid > 0 and docker_ops.is_local(container):
        path = Path(f"/proc/{pid}/net/{name}")
        try:
            return Table(path.read_text(errors="replace"), via="host /proc")
        except OSError:
            pass  # not this host's pid namespace (remote engine): ask the container
    try:
        res = docker_ops.exec_in(container, ["cat", f"/proc/net/{name}"])
    except Exception as exc:  # no `cat` in the image, container stopped meanwhile
        return Table(None, f"cannot read /proc/net/{name}: {exc}")
    if res.ok:
        return Table(res.output, via="docker exec")
    return Table(None, f"cannot read /proc/net/{name}: {res.output.strip()[:200]}")


def tcp_table(container: Container) -> tuple[list[TcpSocket] | None, str | None]:
    table = read_proc_net(container, "tcp")
    if table.text is None:
        return None, table.error
    return parse_proc_tcp(table.text), None


def conntrack_table(container: Container) -> tuple[list[Flow] | None, str | None]:
    table = read_proc_net(container, "nf_conntrack")
    if table.text is None:
        return None, table.error
    return parse_conntrack(table.text), None
