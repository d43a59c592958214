"""The one error-to-exit-code wrapper of every command line (`fer-jax`, `fer-jax compare`, `experiments.*`).

Its own module, so that `fer_jax.cli` and `fer_jax.compare` both import it without importing each other.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from fer_jax.config import ConfigError
from fer_jax.errors import CheckpointError, DataError, DistributedError, DownloadError, TrainingError


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
        ConfigError,
    ) as err:
        print(f"{program}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    return 0
