"""Latency without netem: packets queued to user space (NFQUEUE) and let go after a delay.

Why: the kernel this project's CI runs on has no sch_netem ("Specified qdisc kind is
unknown"), and a WAN without latency hides the bugs that only show when a relayed round
trip costs 100 ms. NFQUEUE is there: an iptables rule in the mangle table's POSTROUTING
hands every packet leaving an interface to a queue, and the small program below (run with
the image's python3 in the same network namespace, no packages) holds each one for the
delay, plus a random jitter, before it accepts it. It speaks nfnetlink_queue over a raw
netlink socket and asks only for packet ids (copy mode meta), so no packet is copied.

The rule carries `--queue-bypass`: if the program is not running, packets pass undelayed
rather than being dropped, so a crashed delayer cannot black-hole a testnet; the Docker
test measures the round trip, so a delay that is not there fails it.
"""

from __future__ import annotations

import shlex

from docker.models.containers import Container

from harness.errors import SentrynetError
from harness.infra import docker as docker_ops

# Runs inside the container: python3 -c DELAYER QUEUE DELAY_MS JITTER_MS PIDFILE
DELAYER = r"""
import heapq, os, random, select, socket, struct, sys, time
queue, delay, jitter = int(sys.argv[1]), float(sys.argv[2]) / 1000, float(sys.argv[3]) / 1000
open(sys.argv[4], "w").write(str(os.getpid()))
SUBSYS_QUEUE, MSG_PACKET, MSG_VERDICT, MSG_CONFIG = 3, 0, 1, 2
REQUEST, ACK = 1, 4
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
try:
    s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (CAP_NET_ADMIN)
except OSError:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind((0, 0))
seq = 0
def attr(kind, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)
def send(msg, body, flags=REQUEST):
    global seq
    seq += 1
    head = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue))
    data = head + body
    s.send(struct.pack("=LHHLL", 16 + len(data), (SUBSYS_QUEUE << 8) | msg, flags, seq, 0) + data)
def config(body):
    send(MSG_CONFIG, body, REQUEST | ACK)
    reply = s.recv(65536)
    err = struct.unpack("=i", reply[16:20])[0] if len(reply) >= 20 else 0
    if err:
        sys.exit(f"delayer: queue {queue}: config refused: {os.strerror(-err)}")
config(attr(1, struct.pack("=BBH", 1, 0, 0)))             # NFQA_CFG_CMD: BIND
config(attr(2, struct.pack(">LB", 0, 1)) +                 # NFQA_CFG_PARAMS: copy meta
       attr(3, struct.pack(">L", 65536)))                  # NFQA_CFG_QUEUE_MAXLEN
print(f"delayer: queue {queue}: {delay * 1000:g} ms +- {jitter * 1000:g} ms", flush=True)
held = []
while True:
    now = time.monotonic()
    while held and held[0][0] <= now:
        _, pid = heapq.heappop(held)
        send(MSG_VERDICT, attr(2, struct.pack(">LL", 1, pid)))  # NFQA_VERDICT_HDR: ACCEPT
    wait = max(0.0, held[0][0] - now) if held else 1.0
    if not select.select([s], [], [], wait)[0]:
        continue
    try:
        data = s.recv(1 << 20)
    except OSError as exc:  # ENOBUFS: the queue overflowed the socket; bypass covers it
        print(f"delayer: {exc}", flush=True)
        continue
    at = time.monotonic()
    off = 0
    while off + 16 <= len(data):
        length, kind = struct.unpack_from("=LH", data, off)
        if length < 16:
            break
        if kind == (SUBSYS_QUEUE << 8) | MSG_PACKET:
            pos = off + 20
            while pos + 4 <= off + length:
                alen, atype = struct.unpack_from("=HH", data, pos)
                if alen < 4:
                    break
                if atype & 0x7FFF == 1:  # NFQA_PACKET_HDR
                    pid = struct.unpack_from(">L", data, pos + 4)[0]
                    extra = random.uniform(-jitter, jitter) if jitter else 0.0
                    heapq.heappush(held, (at + max(0.0, delay + extra), pid))
                    break
                pos += (alen + 3) & ~3
        off += (length + 3) & ~3
"""

SCRIPT_NAME = "sn_delayer.py"  # written beside netsetup.sh / router.sh (templates/delay.sh.j2)
QUEUE_BASE = 700  # queue numbers 700 + k for the k-th delayed interface in a container


def _comment(iface: str) -> str:
    return f"sn:delay:{iface}"


def start(container: Container, iface: str, ms: float, jitter_ms: float = 0.0) -> str:
    """Delay every packet leaving `iface` of `container` by `ms` (+- `jitter_ms`)."""
    stop(container, iface)
    number = QUEUE_BASE + _index(container, iface)
    pidfile = f"/tmp/sn-delay-{iface}.pid"
    args = ["python3", "-c", DELAYER, str(number), f"{ms:g}", f"{jitter_ms:g}", pidfile]
    log = f"/tmp/sn-delay-{iface}.log"
    cmd = " ".join(shlex.quote(a) for a in args)
    container.exec_run(["sh", "-c", f"{cmd} >{log} 2>&1"], detach=True)
    _wait_started(container, log, number)
    rule = (
        f"POSTROUTING -o {iface} -m comment --comment {_comment(iface)} "
        f"-j NFQUEUE --queue-num {number} --queue-bypass"
    )
    docker_ops.must_exec(container, f"iptables -t mangle -A {rule}")
    return f"{iface} (nfqueue {number})"


def stop(container: Container, iface: str) -> bool:
    """Remove the delay on `iface` (its rule, then its program); was there one?"""
    needle = shlex.quote(f'--comment "{_comment(iface)}"')
    script = (
        f"iptables -t mangle -S POSTROUTING | grep -F -- {needle} | sed 's/^-A /-D /' "
        "> /tmp/sn-undelay || true\n"
        'n=0; while read -r rule; do eval iptables -t mangle "$rule" && n=$((n+1)); '
        "done < /tmp/sn-undelay\n"
        f"pidfile=/tmp/sn-delay-{iface}.pid\n"
        'if [ -s "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; '
        'rm -f "$pidfile"; n=$((n+1)); fi\n'
        "echo $n"
    )
    out = docker_ops.must_exec(container, script).strip().splitlines()
    return bool(out and out[-1].isdigit() and int(out[-1]) > 0)


def _index(container: Container, iface: str) -> int:
    """A stable small number per interface (eth0 -> 0, eth1 -> 1, ...)."""
    digits = "".join(ch for ch in iface if ch.isdigit())
    return int(digits) % 100 if digits else 99


def _wait_started(container: Container, log: str, number: int) -> None:
    from harness.wait import wait_until

    def bound() -> tuple[bool, str]:
        res = docker_ops.exec_in(container, ["cat", log])
        text = res.output if res.ok else ""
        if "config refused" in text or "Traceback" in text:
            raise SentrynetError(f"{container.name}: the delayer did not start: {text.strip()}")
        return "delayer: queue" in text, text.strip() or "no output yet"

    wait_until(
        bound,
        what=f"the delayer on nfqueue {number} in {container.name}",
        deadline_s=20,
        likely_cause="python3 missing in the image, or no nfnetlink_queue in this kernel",
    )
