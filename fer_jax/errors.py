"""The errors a user can fix: each becomes one line on stderr and exit code 2 (`fer_jax.commands.run_command`).

They live here, apart from the modules that raise them, so that catching them imports nothing heavy: the
command line's error handling must not load torch, Orbax or the trainer for a `fer-jax predict`.
"""

from __future__ import annotations


class DataError(Exception):
    """Bad or missing input data; the message is one line that names the file or row."""


class DownloadError(Exception):
    """The archive could not be fetched; the message is one line saying why and what to do."""


class CheckpointError(Exception):
    """No readable checkpoint is left where one is needed; the message says what is damaged and what to do."""


class DistributedError(Exception):
    """A multi-process run cannot start or continue (a process is missing or died); one line."""


class TrainingError(Exception):
    """The run cannot start or continue; the message says why in one line."""
