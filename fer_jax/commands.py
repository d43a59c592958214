"""The one error-to-exit-code wrapper of every command line (`fer-jax`, `fer-jax compare`, `experiments.*`).

Its own module, so that `fer_jax.cli` and `fer_jax.compare` both import it without importing each other.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from fer_jax.config import ConfigError
from fer_jax.errors import CheckpointError, DataError, DistributedError, DownloadError, TrainingError
from fer_jax.files import FileFormatError, WriteError


def run_command(program: str, action: Callable[[], object]) -> int:
    """Run `action`; errors a user can fix become one line on stderr and exit code 2.

    Shared by `fer-jax`, `fer-jax compare` and the `python -m experiments.*` scripts.
    """
    try:
        action()
    except (
        CheckpointError,
        DataError,
        DistributedError,
        DownloadError,
        TrainingError,
        FileNotFoundError,
        FileFormatError,
        WriteError,
        ConfigError,
    ) as err:
        print(f"{program}: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    return 0


def one_line(message: str) -> str:
    """`message` on one line: a line break in it (e.g. in a name the user typed) is shown escaped."""
    return message.replace("\r", "\\r").replace("\n", "\\n")
