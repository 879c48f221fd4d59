"""Test and bench support: real node processes on loopback (procs), chain helpers (chain)
and topology variants (topology).

Kept outside node/ so none of it ships in the node image.
"""
