"""Yamux's PY_YAMUX_* tuning variables read once, not on every frame.

Upstream (py-libp2p 0.8.1, `libp2p.stream_muxer.yamux.yamux._py_yamux_env` and
`_py_yamux_env_set`) reads `os.environ` at call time, and calls them on the hot path:
`YamuxStream._grow_threshold` (two reads per stream read, through
`_yamux_disable_hysteresis` and `_yamux_batch_threshold_divisor`), the debug-log checks
and the data-frame read timeout. In an idle validator that was 24 000 environment lookups
a minute, 2 % of its CPU (bench idle_profile, cProfile). A node's environment does not
change while it runs: each (name, default) is read once and remembered. Setting a
PY_YAMUX_* variable still works; it must be set before the node starts, as it is in
upstream's own perf harness.
"""

from __future__ import annotations

import functools

import libp2p.stream_muxer.yamux.yamux as yamux_mod

_installed = False
upstream_py_yamux_env = yamux_mod._py_yamux_env  # kept for tests/node/test_overrides.py


@functools.cache
def py_yamux_env_once(name: str, default: str = "") -> str:
    return yamux_mod.os.getenv(f"PY_YAMUX_{name}", default)


@functools.cache
def py_yamux_env_set_once(name: str) -> bool:
    return f"PY_YAMUX_{name}" in yamux_mod.os.environ


def install_yamux_env_once() -> None:
    """Process-wide (module functions, looked up by upstream at each call), idempotent."""
    global _installed
    if _installed:
        return
    yamux_mod._py_yamux_env = py_yamux_env_once
    yamux_mod._py_yamux_env_set = py_yamux_env_set_once
    _installed = True
