"""The stages of a run, one verb per file (setup, start, audit, observe, perturb, steps,
report, cleanup), the one handle of a running testnet (testnet.py) and runner.py, the one
function that runs them in order."""
