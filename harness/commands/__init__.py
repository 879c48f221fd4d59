"""Subcommands of `sentrynet`; one module each (see harness/cli.py)."""
