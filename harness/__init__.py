"""sentrynet harness: topology -> model -> render -> up -> audit -> steps -> report -> down.

The layout shows the flow; each layer imports only the layers before it
(tests/unit/test_layers.py keeps it so):
    errors.py progress.py wait.py   foundations
    model/      the manifest resolved into the testnet (Testnet, Node, Network, Router)
    infra/      Docker, Compose, the node image, rendered files
    client.py   a node's HTTP API (NodeClient) and status snapshots
    checks/     scenario checks: pure functions Observation -> Verdict
    run/        the stages of a run (setup, start, audit, observe, perturb, steps, report,
                cleanup), RunningTestnet (the one handle) and runner.run (all of them in order)
    scenarios/                      scenario files (scenarios/library/*.yaml): loader, actions
    cli/ pytest_plugin.py           the `sentrynet` command and the pytest fixtures
"""

__version__ = "0.1.0"
