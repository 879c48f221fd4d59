"""sentrynet harness: topology -> render -> images -> up -> wait -> checks -> report -> down."""

__version__ = "0.1.0"
