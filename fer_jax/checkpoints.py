"""Orbax checkpoints of a run: the latest (to resume) and the best on PublicTest (to report).

Each is an Orbax `CheckpointManager` keeping one step, committed atomically
(Orbax writes to a temporary folder and renames it), so a crash at any moment
leaves the previous checkpoint intact. A checkpoint holds the training state
(weights, optimizer state, step) and a JSON record of the epoch, the
early-stopping state and the metrics history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class RunCheckpoints:
    """The `latest/` and `best/` checkpoints under `RUN_DIR/checkpoints/`."""

    def __init__(self, run_dir: str | Path) -> None:
        root = Path(run_dir).absolute() / "checkpoints"
        options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False, create=True)
        self.latest = ocp.CheckpointManager(root / "latest", options=options)
        self.best = ocp.CheckpointManager(root / "best", options=options)

    def save(self, which: str, epoch: int, state: Any, record: dict[str, Any]) -> None:
        """Save `state` and `record` as epoch `epoch` of `which` ('latest' or 'best')."""
        manager = self._manager(which)
        manager.save(
            epoch,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)),
            force=True,
        )
        manager.wait_until_finished()

    def has(self, which: str) -> bool:
        return self._manager(which).latest_step() is not None

    def restore(self, which: str, like: Any) -> tuple[Any, dict[str, Any]]:
        """Restore the newest `which` checkpoint into the structure (and shardings) of `like`."""
        manager = self._manager(which)
        epoch = manager.latest_step()
        if epoch is None:
            raise FileNotFoundError(f"no {which} checkpoint in {manager.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        restored = manager.restore(
            epoch,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()),
        )
        return restored.state, restored.record

    def close(self) -> None:
        self.latest.close()
        self.best.close()

    def _manager(self, which: str) -> ocp.CheckpointManager:
        if which not in ("latest", "best"):
            raise ValueError(f"unknown checkpoint {which!r}: expected 'latest' or 'best'")
        return self.latest if which == "latest" else self.best
