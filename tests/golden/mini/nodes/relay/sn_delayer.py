
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
