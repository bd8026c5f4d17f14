"""Errors a user can cause.

The CLI catches :class:`UserError`, prints its message on one line and exits with code 2, so
every message must say *where* (file, line, field) and *what to do*; anything else escaping is
a bug in seqformer and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Base class for errors caused by user input; the CLI turns them into exit code 2."""


class DataError(UserError):
    """A corpus or input file is missing, unreadable or malformed."""


class ConfigError(UserError):
    """A recipe or `--set` override names an unknown field or holds an invalid value."""


class CheckpointError(UserError):
    """A run/model directory is missing, corrupt or incompatible with what was asked."""
