"""node/output.py: a node's log and event lines never wait for their reader. A real pipe
that nobody reads stands in for a container's stdout that Docker drains too slowly."""

from __future__ import annotations

import os
import threading
import time

from node.output import OffLoopWriter

LINE = "x" * 99 + "\n"  # 100 bytes: 2000 of them are three times a 64 KiB pipe


def _writes_finish(write: object, lines: int, within_s: float) -> bool:
    done = threading.Event()

    def run() -> None:
        try:
            for _ in range(lines):
                write(LINE)  # type: ignore[operator]
        except OSError:  # the control's pipe closed under it
            return
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(within_s)


def test_a_full_pipe_blocks_a_plain_write_but_not_the_writer() -> None:
    r, w = os.pipe()
    plain = os.fdopen(w, "w", buffering=1)
    assert not _writes_finish(plain.write, 2000, 1.0), "the pipe did not fill: no test"
    os.close(r)  # unblocks the stuck plain write (EPIPE), ending its thread

    r, w = os.pipe()
    out = OffLoopWriter(os.fdopen(w, "w", buffering=1), max_lines=100)
    assert _writes_finish(out.write, 2000, 10.0), "the writer blocked on its reader"
    assert out.dropped_total > 0  # the queue (100 lines) overflowed while nobody read
    reader = os.fdopen(r)
    got: list[str] = []
    seen_after = threading.Event()

    def read() -> None:
        for line in reader:
            got.append(line)
            if line == "after\n":
                seen_after.set()
                return

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 10
    while not out.idle():  # the reader drains the pipe, the thread the queue
        assert time.monotonic() < deadline, "the queue was never written out"
        time.sleep(0.01)
    out.write("after\n")
    assert seen_after.wait(10), got[-3:]
    notices = [int(line[1:].split()[0]) for line in got if "output line(s) dropped" in line]
    kept = [line for line in got[:-1] if "dropped" not in line]
    assert notices and set(kept) == {LINE}, got[:3]
    assert len(kept) + sum(notices) == 2000  # every line arrived or was counted
    out.close()
