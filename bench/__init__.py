"""sentrynet benchmarks: measured figures for reservation, hole punch, sync, relay cost and scale.

`python -m bench.run` (or `make bench`) writes bench/results/<run-id>.json, latest.json, a
markdown table and PNG plots. Numbers come from here, never from tests (CONTRIBUTING.md).
"""
