"""A container's network state read from outside it: its TCP tables, its routing table and
its conntrack table.

Why: a node we did not write serves no sentrynet API, so what it did must be seen from
where it cannot lie: the kernel. Every container has its own network namespace, and the
kernel shows a namespace's TCP sockets in `/proc/<pid>/net/tcp` (and `tcp6`), its main
routing table in `/proc/<pid>/net/route` and its connection tracking (what a NAT router
translated) in `/proc/<pid>/net/nf_conntrack`. All are read from the host through the
container's init pid, so the image needs no tools at all (no `ss`, no `ip`, no
`conntrack`, not even a shell), and a read costs no `docker exec` (the safety audit reads
every container's routes and listeners: ~136 execs at 64 nodes). Where the host cannot see
the engine's pids (a remote engine), the same files are read with `docker exec cat`,
which needs `cat` in the image.

The parsers are pure functions of the file text (unit-tested with captured samples); the
readers return `None` with the reason when a table cannot be read, never a guess.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable
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


def _hex_ipv4(text: str) -> str:
    """`FE0018AC` (little-endian IPv4 in hex) -> '172.24.0.254'."""
    return socket.inet_ntoa(struct.pack("<I", int(text, 16)))


def _hex_ipv4_port(field_text: str) -> tuple[str, int]:
    """`0100007F:0FA1` (little-endian IPv4, big-endian port in hex) -> ('127.0.0.1', 4001)."""
    addr_hex, port_hex = field_text.split(":")
    return _hex_ipv4(addr_hex), int(port_hex, 16)


def _hex_ipv6_port(field_text: str) -> tuple[str, int]:
    """`00000000000000000000000001000000:0FA1` -> ('::1', 4001): 32 hex digits, four 32-bit
    words each in host (little-endian) byte order, then the port big-endian in hex."""
    addr_hex, port_hex = field_text.split(":")
    if len(addr_hex) != 32:
        raise ValueError(f"not an IPv6 address: {addr_hex!r}")
    words = [int(addr_hex[i : i + 8], 16) for i in range(0, 32, 8)]
    return socket.inet_ntop(socket.AF_INET6, struct.pack("<4I", *words)), int(port_hex, 16)


def _parse_tcp_rows(text: str, endpoint: Callable[[str], tuple[str, int]]) -> list[TcpSocket]:
    """Rows of a /proc/net/tcp-like table; the header and lines that do not parse skipped."""
    out: list[TcpSocket] = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4:
            continue
        try:
            lip, lport = endpoint(parts[1])
            rip, rport = endpoint(parts[2])
        except (ValueError, struct.error, OSError):
            continue
        out.append(TcpSocket(lip, lport, rip, rport, TCP_STATES.get(parts[3].upper(), parts[3])))
    return out


def parse_proc_tcp(text: str) -> list[TcpSocket]:
    """Rows of /proc/net/tcp (IPv4). Lines that do not parse are skipped (the header)."""
    return _parse_tcp_rows(text, _hex_ipv4_port)


def parse_proc_tcp6(text: str) -> list[TcpSocket]:
    """Rows of /proc/net/tcp6, addresses in the usual text form (`::`, `::ffff:10.0.0.1`).
    Lines that do not parse are skipped (the header)."""
    return _parse_tcp_rows(text, _hex_ipv6_port)


RTF_UP = 0x0001  # include/uapi/linux/route.h
RTF_REJECT = 0x0200  # an unreachable or prohibit route


def _proc_route_row(parts: list[str]) -> dict[str, str] | None:
    """One /proc/net/route row as audit.parse_routes gives an `ip -4 route` line; None for
    the header, a row that does not parse, or a route that is not up."""
    if len(parts) < 8:
        return None
    try:
        iface, dest, gateway = parts[0], _hex_ipv4(parts[1]), _hex_ipv4(parts[2])
        flags, metric = int(parts[3], 16), int(parts[6])
        prefix_len = ipaddress.IPv4Network(f"0.0.0.0/{_hex_ipv4(parts[7])}").prefixlen
    except (ValueError, struct.error, OSError):
        return None
    if not flags & RTF_UP:
        return None
    where = "default" if dest == "0.0.0.0" and prefix_len == 0 else f"{dest}/{prefix_len}"
    if iface == "*":  # no device: a route that drops (ip shows its type before the prefix)
        kind = "reject" if flags & RTF_REJECT else "blackhole"
        return {"dest": f"{kind} {where}", "line": f"{kind} {where}"}
    route = {"dest": where, "dev": iface}
    words = [where]
    if gateway != "0.0.0.0":
        route["via"] = gateway
        words += ["via", gateway]
    words += ["dev", iface] + (["metric", str(metric)] if metric else [])
    route["line"] = " ".join(words)
    return route


def parse_proc_route(text: str) -> list[dict[str, str]]:
    """Routes of /proc/net/route (the main table, as `ip -4 route show` lists), each
    `{"dest": "default" | "a.b.c.d/len", "via": gateway (if any), "dev": iface, "line":
    "default via 172.24.0.254 dev eth0"}`: the shape audit.parse_routes gives `ip` lines,
    so the audit judges both alike. The header and rows that do not parse are skipped."""
    out = []
    for line in text.splitlines():
        route = _proc_route_row(line.split())
        if route is not None:
            out.append(route)
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
    # the namespace has no such file (tcp6 with IPv6 off in the kernel), as opposed to one
    # that could not be read: only this may be taken as an empty table
    missing: bool = False


def read_proc_net(container: Container, name: str) -> Table:
    """`/proc/net/<name>` of the container's network namespace (see the module docstring).
    Every error names the file."""
    return read_proc_nets(container, name)[0]


def read_proc_nets(container: Container, *names: str) -> list[Table]:
    """`/proc/net/<name>` for each name, from one look at the container (one inspect for
    several tables: the listener audit reads tcp and tcp6 of every node)."""
    try:
        container.reload()
    except Exception as exc:
        return [Table(None, f"cannot read /proc/net/{n}: container gone: {exc}") for n in names]
    state = container.attrs.get("State", {})
    if state.get("Status") != "running":
        status = state.get("Status", "?")
        return [Table(None, f"cannot read /proc/net/{n}: container {status}") for n in names]
    pid = int(state.get("Pid") or 0)
    # another host's pid names another process here, if any: only a local one is read
    local_pid = pid if pid > 0 and docker_ops.is_local(container) else 0
    return [_read_one(container, local_pid, n) for n in names]


def _read_one(container: Container, local_pid: int, name: str) -> Table:
    """One table of a running container: from the host through `local_pid`, else (a remote
    engine, or a pid not in this host's namespace) with `docker exec cat`."""
    fail = f"cannot read /proc/net/{name}"
    if local_pid:
        path = Path(f"/proc/{local_pid}/net/{name}")
        try:
            return Table(path.read_text(errors="replace"), via="host /proc")
        except FileNotFoundError:
            if path.parent.is_dir():  # the namespace is in sight and has no such file
                return Table(None, f"{fail}: no such file", via="host /proc", missing=True)
        except OSError:
            pass  # not this host's pid namespace (remote engine): ask the container
    try:
        res = docker_ops.exec_in(container, ["cat", f"/proc/net/{name}"])
    except Exception as exc:  # no `cat` in the image, container stopped meanwhile
        return Table(None, f"{fail}: {exc}")
    if res.ok:
        return Table(res.output, via="docker exec")
    said = res.output.strip()
    return Table(
        None, f"{fail}: {said[:200]}", via="docker exec", missing=cat_no_such_file(said, name)
    )


def cat_no_such_file(said: str, name: str) -> bool:
    """Did `cat /proc/net/<name>` fail because there is no such file? cat's own words (GNU
    and busybox), not the engine's for a missing `cat` (`executable file not found`)."""
    return f"/proc/net/{name}" in said and "No such file or directory" in said


def tcp_table(container: Container) -> tuple[list[TcpSocket] | None, str | None]:
    table = read_proc_net(container, "tcp")
    if table.text is None:
        return None, table.error
    return parse_proc_tcp(table.text), None


def listeners(container: Container) -> tuple[list[tuple[str, int]] | None, str | None]:
    """(ip, port) of every LISTEN socket in the namespace, IPv4 and IPv6 (listening_on)."""
    return listening_on(*read_proc_nets(container, "tcp", "tcp6"))


def listening_on(tcp: Table, tcp6: Table) -> tuple[list[tuple[str, int]] | None, str | None]:
    """(ip, port) of the LISTEN rows of both tables. No tcp6 file (IPv6 off in the kernel)
    is no IPv6 socket; a tcp6 that exists but cannot be read is an error, never an empty
    table: a wildcard IPv6 listener must not slip through."""
    if tcp.text is None:
        return None, tcp.error
    if tcp6.text is None and not tcp6.missing:
        return None, tcp6.error
    socks = parse_proc_tcp(tcp.text) + parse_proc_tcp6(tcp6.text or "")
    return [(s.local_ip, s.local_port) for s in socks if s.state == "LISTEN"], None


def routes(container: Container) -> tuple[list[dict[str, str]] | None, str | None]:
    """The namespace's main IPv4 routing table (parse_proc_route)."""
    table = read_proc_net(container, "route")
    if table.text is None:
        return None, table.error
    return parse_proc_route(table.text), None


def conntrack_table(container: Container) -> tuple[list[Flow] | None, str | None]:
    table = read_proc_net(container, "nf_conntrack")
    if table.text is None:
        return None, table.error
    return parse_conntrack(table.text), None
