"""What a NAT router really does, measured from outside: RFC 4787 mapping and filtering,
probed the way RFC 5780 does, with UDP.

Why: a topology says `nat: cone` or `symmetric`; a harness whose claims rest on the router
must show that the router behaves as named, on this kernel, not assume it. A host behind
the router sends from one local port to two public observers on two ports each; the
source each observer saw (the mapping) tells the mapping behaviour and whether the port
was kept. From a fresh local port the host then contacts one observer port only, and
three datagrams come back unasked: from the other observer, from the same observer's
other port, and last from the port it contacted (the control, which any NAT lets in).
Which of them arrive tells the filtering behaviour.

Observers are any two containers with distinct public addresses (a public node, the
other network's router); every script runs with the image's python3 through docker exec.
UDP is what the routers NAT with the same MASQUERADE rule as TCP; no libp2p is involved.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from docker.models.containers import Container

from harness.errors import SentrynetError
from harness.infra import docker as docker_ops
from harness.wait import wait_until

# An observer: UDP on the given ports of its address; answers every probe with the source
# it saw; on {"send": [ip, port], "from": port} sends one datagram there from that port.
OBSERVER = r"""
import json, select, socket, sys, time
ip, ports = sys.argv[1], [int(p) for p in sys.argv[2].split(",")]
until = time.time() + float(sys.argv[3])
socks = []
for p in ports:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, p))
    socks.append(s)
open(sys.argv[4], "w").write("ready")
while time.time() < until:
    for s in select.select(socks, [], [], 0.5)[0]:
        data, src = s.recvfrom(2048)
        try:
            msg = json.loads(data)
        except ValueError:
            continue
        if "quit" in msg:
            sys.exit(0)
        if "send" in msg:
            out = next(x for x in socks if x.getsockname()[1] == msg["from"])
            note = json.dumps({"unasked": list(out.getsockname())}).encode()
            out.sendto(note, tuple(msg["send"]))
        else:
            s.sendto(json.dumps({"observed": list(src), "at": list(s.getsockname())}).encode(), src)
"""

# The host behind the router. mode map: from `port`, probe every target, print what each
# saw. mode filter: from `port`, probe the first target, write the mapping to `out`, then
# record every unasked datagram until the one from the probed target itself arrives.
INSIDE = r"""
import json, socket, sys, time
mode, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
targets, out = json.loads(sys.argv[4]), sys.argv[5]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((ip, port))
s.settimeout(1.0)
def probe(t):
    for _ in range(5):
        s.sendto(b'{"probe": 1}', tuple(t))
        try:
            while True:
                data, src = s.recvfrom(2048)
                if list(src) == list(t):
                    return json.loads(data)["observed"]
        except socket.timeout:
            continue
    return None
if mode == "map":
    print(json.dumps({"mapped": [probe(t) for t in targets]}))
    sys.exit(0)
mapped = probe(targets[0])
open(out, "w").write(json.dumps({"mapped": mapped}))
got, deadline = [], time.time() + float(sys.argv[6])
while time.time() < deadline:
    try:
        data, src = s.recvfrom(2048)
    except socket.timeout:
        continue
    if b"unasked" in data:
        got.append(list(src))
        if list(src) == list(targets[0]):
            break
open(out, "w").write(json.dumps({"mapped": mapped, "unasked": got, "done": True}))
"""

# A command to the observer in the same container (sent to its own address and port).
SEND = (
    "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.sendto(sys.argv[1].encode(), (sys.argv[2], int(sys.argv[3])))"
)

QUIT = '{"quit": 1}'

MAPPINGS = ("endpoint-independent", "address-dependent", "address-and-port-dependent")
PRESETS = {  # (mapping, filtering) -> the preset name RFC 3489 would have used
    ("endpoint-independent", "endpoint-independent"): "full-cone",
    ("endpoint-independent", "address-dependent"): "restricted-cone",
    ("endpoint-independent", "address-and-port-dependent"): "port-restricted-cone",
}
OBSERVER_PORTS = (3478, 3479)  # the STUN port and the next one


@dataclass(frozen=True)
class Observer:
    container: Container
    ip: str  # its public address
    # a NAT router's public side drops what it did not ask for: open the observer ports
    # in its INPUT chain for the probe (comment sn:natprobe, removed afterwards)
    open_input: bool = False


OPEN_RULE = "INPUT -p udp --dport {p1}:{p2} -m comment --comment sn:natprobe -j ACCEPT"


@dataclass(frozen=True)
class NatBehaviour:
    mapping: str
    filtering: str
    port_preserving: bool
    mapped: tuple[tuple[str, int], ...]  # what each of the four observer ports saw
    unasked: tuple[tuple[str, int], ...]  # the unasked datagrams that came in

    @property
    def preset(self) -> str:
        """full-cone | restricted-cone | port-restricted-cone | symmetric."""
        return PRESETS.get((self.mapping, self.filtering), "symmetric")

    def describe(self) -> str:
        kept = "port kept" if self.port_preserving else "port not kept"
        return (
            f"{self.preset}: mapping {self.mapping}, filtering {self.filtering}, {kept}; "
            f"mapped {_addrs(self.mapped)}, let in {_addrs(self.unasked)}"
        )


def _addrs(pairs: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{ip}:{port}" for ip, port in pairs) or "nothing"


def mapping_of(mapped: list[tuple[str, int]]) -> str:
    """Four mappings, for (A,p1) (A,p2) (B,p1) (B,p2): one for all, one per observer
    address, or one per address and port."""
    if len(set(mapped)) == 1:
        return MAPPINGS[0]
    if mapped[0] == mapped[1] and mapped[2] == mapped[3]:
        return MAPPINGS[1]
    return MAPPINGS[2]


def filtering_of(
    unasked: list[tuple[str, int]], other: tuple[str, int], other_port: tuple[str, int]
) -> str:
    """What came in unasked: from the other observer (anyone may send), from the contacted
    observer's other port (the contacted address may), or only the contacted port."""
    if other in unasked:
        return "endpoint-independent"
    if other_port in unasked:
        return "address-dependent"
    return "address-and-port-dependent"


def _run(container: Container, script: str, *args: str) -> str:
    return docker_ops.must_exec(container, ["python3", "-c", script, *args])


def _start(container: Container, script: str, *args: str) -> None:
    cmd = " ".join(shlex.quote(a) for a in ("python3", "-c", script, *args))
    container.exec_run(["sh", "-c", f"{cmd} >/tmp/sn-natprobe.log 2>&1"], detach=True)


def _read(container: Container, path: str) -> str:
    res = docker_ops.exec_in(container, ["cat", path])
    return res.output if res.ok else ""


def classify(
    inside: Container, inside_ip: str, a: Observer, b: Observer, port: int = 40000
) -> NatBehaviour:
    """Measure the NAT between `inside` (a host behind it, at `inside_ip`) and the two
    public observers. Uses local ports `port` (mapping) and `port + 1` (filtering)."""
    rule = OPEN_RULE.format(p1=OBSERVER_PORTS[0], p2=OBSERVER_PORTS[1])
    try:
        for o in (a, b):
            if o.open_input:
                docker_ops.must_exec(o.container, f"iptables -I {rule}")
            _start_observer(o)
        return _measure(inside, inside_ip, a, b, port)
    finally:
        for o in (a, b):
            quit_ = ["python3", "-c", SEND, QUIT, o.ip, str(OBSERVER_PORTS[0])]
            docker_ops.exec_in(o.container, quit_)
            if o.open_input:
                docker_ops.exec_in(o.container, f"iptables -D {rule}")


def _start_observer(o: Observer) -> None:
    p1, p2 = OBSERVER_PORTS
    flag = "/tmp/sn-observer-ready"
    docker_ops.exec_in(o.container, ["rm", "-f", flag])
    _start(o.container, OBSERVER, o.ip, f"{p1},{p2}", "120", flag)

    def ready() -> tuple[bool, str]:
        return _read(o.container, flag) == "ready", _read(o.container, "/tmp/sn-natprobe.log")

    wait_until(
        ready,
        what=f"the UDP observer in {o.container.name} on {o.ip}:{p1},{p2}",
        deadline_s=30,
        likely_cause="python3 failed in the container or the ports are taken",
    )


def _measure(
    inside: Container, inside_ip: str, a: Observer, b: Observer, port: int
) -> NatBehaviour:
    p1, p2 = OBSERVER_PORTS
    targets = [[a.ip, p1], [a.ip, p2], [b.ip, p1], [b.ip, p2]]
    out = _run(inside, INSIDE, "map", inside_ip, str(port), json.dumps(targets), "-")
    mapped_raw = json.loads(out.strip().splitlines()[-1])["mapped"]
    if any(m is None for m in mapped_raw):
        silent = [t for t, m in zip(targets, mapped_raw, strict=True) if m is None]
        raise SentrynetError(
            f"{inside.name}: no answer from observer(s) {silent}: "
            "the router drops this UDP, or the observers are not reachable"
        )
    mapped = [(str(m[0]), int(m[1])) for m in mapped_raw]

    result = "/tmp/sn-natprobe-filter.json"
    docker_ops.exec_in(inside, ["rm", "-f", result])
    _start(
        inside, INSIDE, "filter", inside_ip, str(port + 1), json.dumps(targets[:1]), result, "20"
    )

    def mapped_yet() -> tuple[bool, str]:
        text = _read(inside, result)
        return bool(text), text or "no mapping yet"

    first = wait_until(
        mapped_yet,
        what=f"{inside.name} to reach {a.ip}:{p1} from port {port + 1}",
        deadline_s=30,
        likely_cause="the router drops this UDP",
    )
    mapping = json.loads(first)["mapped"]
    if mapping is None:
        raise SentrynetError(f"{inside.name}: no answer from {a.ip}:{p1} for the filtering probe")
    # unasked datagrams: the other observer, the same observer's other port, then the
    # contacted port itself (the control, which ends the listener)
    for o, frm in ((b, p1), (a, p2), (a, p1)):
        cmd = json.dumps({"send": mapping, "from": frm})
        docker_ops.must_exec(o.container, ["python3", "-c", SEND, cmd, o.ip, str(frm)])

    def finished() -> tuple[bool, str]:
        text = _read(inside, result)
        return bool(text) and bool(json.loads(text).get("done")), text

    doc = json.loads(
        wait_until(
            finished,
            what=f"{inside.name} to receive the control datagram from {a.ip}:{p1}",
            deadline_s=30,
            likely_cause="the router dropped even the contacted observer's datagram",
        )
    )
    unasked = [(str(u[0]), int(u[1])) for u in doc["unasked"]]
    if (a.ip, p1) not in unasked:
        raise SentrynetError(f"{inside.name}: the control datagram from {a.ip}:{p1} never came in")
    return NatBehaviour(
        mapping=mapping_of(mapped),
        filtering=filtering_of(unasked, (b.ip, p1), (a.ip, p2)),
        port_preserving=all(p == port for _ip, p in mapped),
        mapped=tuple(mapped),
        unasked=tuple(unasked),
    )
