"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from a user (argument, config, file). The message says what, where, and what to do."""
