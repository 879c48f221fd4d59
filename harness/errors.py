"""Errors the CLI reports as one clear line instead of a traceback."""


class SentrynetError(Exception):
    """A user-facing failure: the message says what went wrong and how to fix it."""
