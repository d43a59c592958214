"""Crash-safe Orbax checkpoints of a run: the two latest (to resume) and the best on PublicTest (to report).

`RUN_DIR/checkpoints/{latest,best}/<epoch>/` is an Orbax checkpoint (`state/`: weights, optimizer
state, step; `record/`: the epoch, early-stopping state and metrics history) with a checksum
manifest, `checksums.json`: the size and sha256 of each of its files (but Orbax's own commit
marks, `_CHECKPOINT_METADATA` and `commit_success.txt`, which its commit still writes). Each of
`latest/` and `best/` is saved by an Orbax `CheckpointManager` (synchronous; preservation policy
`LatestN`: 2 latest, 1 best). A save commits in two steps, and a process killed in any of them leaves
a run that resumes:

1. Orbax writes the step into `<epoch>.orbax-checkpoint-tmp`; `checksums.json` is written inside
   it (temporary file, fsync, rename), then Orbax renames the folder to `<epoch>`: the commit point.
   The manifest comes from `ManifestFirst`, the manager's `temporary_path_class`, a subclass of the
   commit in Orbax's public `orbax.checkpoint.path.atomicity` (documented, though marked deprecated
   for `atomicity_options`, which only chooses between Orbax's own commits and has no hook before
   one), so a committed step always has its manifest;
2. the manager removes the steps its policy no longer keeps (`shutil.rmtree`, as Orbax deletes).

In a multi-process run every process calls `save` and Orbax writes each one's shards; process 0
alone writes the manifest, commits, removes and sets aside, between barriers.

A restore verifies the manifest, takes the newest step that passes and that Orbax reads, and falls
back to the next one with a one-line warning naming the damaged file. A step folder without a
manifest, of an epoch no older than the newest step that has one, is a save cut short (by a version
that wrote the manifest after the commit), skipped like a damaged one; older ones (a run saved
before manifests existed, then resumed) and those of a run where no step has one restore
unverified, with a warning. The best
checkpoint falls back to the latest of its epoch, which holds the same weights. When nothing
readable is left: `CheckpointError`, one line saying what is damaged and what to do.

`RunCheckpoints.resume` picks the state a resumed run continues from and sets aside (moves under
`RUN_DIR/set-aside/`, never deletes) what would be in its way: temporary folders, damaged or
unfinished steps, and steps newer than the epoch it continues from, which the run saves again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.path import atomicity

from fer_jax.errors import CheckpointError
from fer_jax.files import write_json
from fer_jax.train import distributed
from fer_jax.train.checkpoint_policy import (
    KEEP,
    MANIFEST,
    Step,
    Unreadable,
    best_order,
    file_digest,
    first_line,
    first_readable,
    move_aside,
    nothing_left,
    resume_order,
    set_aside_reason,
    set_aside_stamp,
    warn,
)
from fer_jax.train.checkpoint_policy import SET_ASIDE as SET_ASIDE  # re-exported: where run folders are read
from fer_jax.train.checkpoint_policy import holds_checkpoints as holds_checkpoints  # re-exported, as SET_ASIDE

ORBAX_COMMIT_FILES = ("_CHECKPOINT_METADATA", "commit_success.txt")
"""Files at the top of a step folder that Orbax writes during its commit, after the manifest: not in it."""


def write_manifest(folder: Path, epoch: int) -> None:
    """Record the size and sha256 of every file under `folder` (but Orbax's commit marks) in
    `folder/checksums.json`, atomically."""
    files = {
        p.relative_to(folder).as_posix(): file_digest(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST and p.relative_to(folder).as_posix() not in ORBAX_COMMIT_FILES
    }
    write_json(folder / MANIFEST, {"epoch": epoch, "files": files})


class ManifestFirst(atomicity.AtomicRenameTemporaryPath):
    """Orbax's commit of a step (atomic rename of its temporary folder), with `checksums.json` written inside the
    temporary folder first: no step folder Orbax has committed lacks its manifest. Orbax commits on process 0
    only, after every process has written its shards. The manager commits each item (`state/`, `record/`) this
    way too, inside the step's temporary folder and before it: those get no manifest of their own."""

    async def finalize(self, *args: Any, **kwargs: Any) -> None:
        final = Path(self.get_final())
        if final.name.isdigit():  # the step folder, not one of its items (`state/`, `record/`), finalized before it
            write_manifest(Path(self.get()), int(final.name))
        await super().finalize(*args, **kwargs)


def verify_manifest(folder: Path, name: str) -> None:
    """Raise `Unreadable` unless every file `folder/checksums.json` lists is there with its size and sha256."""
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise Unreadable(f"{name}/{MANIFEST} is unreadable ({first_line(err)})") from None
    for relative, expected in files.items():
        path = folder / relative
        if not path.is_file():
            raise Unreadable(f"{name}/{relative} is missing")
        if file_digest(path) != expected:
            raise Unreadable(f"{name}/{relative} fails its checksum")


Reader = Callable[[str, Path], tuple[Any, dict[str, Any]]]
"""Reads one step folder of 'latest' or 'best' into (state or weights, record); raises on anything unreadable."""


def ema_weights(state: Any) -> Any:
    """A training state (a struct, or the dict of its fields that checkpoints hold) with its EMA weights
    (`ema`) in place of the trained ones, same structure."""
    if isinstance(state, dict):
        return {**state, "params": state["ema"]["params"], "model_state": state["ema"]["model_state"]}
    return state.replace(params=state.ema["params"], model_state=state.ema["model_state"])


def array_restore_args(like: Any) -> Any:
    """Orbax's restore arguments for each leaf of `like`: its dtype, and its sharding (this process's first device
    when it has none)."""
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda leaf: ocp.ArrayRestoreArgs(dtype=leaf.dtype, sharding=getattr(leaf, "sharding", None) or default), like
    )


class RunCheckpoints:
    """The `latest/` and `best/` checkpoints under `RUN_DIR/checkpoints/`.

    `ema`: whether the run keeps an EMA of its weights (`train.ema_decay` > 0). Its latest steps then hold
    the trained weights in `params`/`model_state` and the selected ones in `ema`, and its best steps the
    selected ones in `params`/`model_state`: a best step cannot stand in for a latest one.
    """

    def __init__(self, run_dir: str | Path, ema: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.root = self.run_dir.absolute() / "checkpoints"
        self.ema = ema
        self._managers: dict[str, ocp.CheckpointManager] = {}
        self._readers: dict[str, ocp.Checkpointer] = {}

    def save(self, which: str, epoch: int, state: Any, record: dict[str, Any]) -> None:
        """Save `state` and `record` as epoch `epoch` of `which` ('latest' or 'best'), with its manifest
        (every process calls this in a multi-process run)."""
        self._manager(which).save(
            epoch,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)),
            force=True,  # every epoch saved is a step to keep, whatever Orbax's save-interval policy says
        )
        distributed.barrier(f"pruned {which} {epoch}")

    def steps(self, which: str) -> list[int]:
        """Epochs with a step folder in `which`, finished or not, newest first."""
        folder = self._folder(which)
        if not folder.is_dir():
            return []
        return sorted((int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True)

    def has(self, which: str) -> bool:
        """Whether `which` has a step folder (readable or not)."""
        return bool(self.steps(which))

    def restore(self, which: str, like: Any) -> tuple[Any, dict[str, Any]]:
        """The newest readable `which` checkpoint, restored into the structure (and shardings) of `like`.

        Falls back, with a warning, to the previous latest, or for 'best' to the latest checkpoint of
        the same epoch (its EMA weights swapped in, in a run with EMA); raises `CheckpointError` when
        none is readable.
        """
        return self._restore_first(which, self._state_reader(like, ema_stand_in=which == "best" and self.ema))

    def restore_weights(self, which: str, like: Any) -> tuple[Any, dict[str, Any]]:
        """Only the weights of the newest readable `which` checkpoint, without its optimizer state, and its record.

        `like` is `{"params": ..., "model_state": ...}` (arrays or `jax.ShapeDtypeStruct` leaves); the weights
        come back in its structure. They are the selected ones: of a run with EMA, a latest step's `ema`.
        Verified and with the fallbacks of `restore`.
        """

        def read(kind: str, path: Path) -> tuple[Any, dict[str, Any]]:
            from_ema = kind == "latest" and self.ema
            item = {"ema": like} if from_ema else like
            state = ocp.args.PyTreeRestore(item=item, restore_args=array_restore_args(item), partial_restore=True)
            restored = self._reader("weights").restore(
                path, args=ocp.args.Composite(state=state, record=ocp.args.JsonRestore())
            )
            return (restored.state["ema"] if from_ema else restored.state), restored.record

        return self._restore_first(which, read)

    def resume(self, like: Any, finished_epochs: int) -> tuple[Any, dict[str, Any]] | None:
        """The state and record a resumed run continues from, or None to start it from the beginning.

        Tries the latest checkpoints, newest first, and for a run without EMA also the best ones (the
        same full training state), so a run killed between its best and latest save continues from
        the best. Sets aside temporary folders, damaged or unfinished steps and steps newer than the
        one it continues from. None only when no epoch is saved and `finished_epochs` (the lines of
        metrics.jsonl) is 0; raises `CheckpointError` when epochs finished but none can be restored.
        """
        newest_verified = self._newest_verified()
        candidates = resume_order(self._all_steps(), best_is_full_state=not self.ema)
        loaded, failed = self._first_readable(candidates, self._state_reader(like), newest_verified)
        committed_latest = any(self._committed("latest", e, newest_verified) for e in self.steps("latest"))
        if loaded is None and (committed_latest or finished_epochs):
            raise self._nothing_left("latest", failed, finished_epochs)
        distributed.barrier("resume loaded")  # every process has read the folders before process 0 moves any
        if distributed.is_writer():
            self._set_aside(loaded[0][1] if loaded else 0, {candidate for candidate, _ in failed})
        distributed.barrier("resume set aside")
        self._close_managers()  # the next save reads the folders again, without what was set aside
        if loaded is None:
            print(f"{self.run_dir}: no epoch had finished and been saved; starting it from the beginning")
            return None
        return loaded[1]

    def close(self) -> None:
        """Release Orbax's resources."""
        self._close_managers()
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def _manager(self, which: str) -> ocp.CheckpointManager:
        """The Orbax CheckpointManager that saves `which` and prunes it to its newest `KEEP[which]` steps, made at
        its first save. Synchronous (a save has committed when it returns); the step commits by `ManifestFirst`."""
        if which not in self._managers:
            options = ocp.CheckpointManagerOptions(
                preservation_policy=ocp.checkpoint_managers.LatestN(n=KEEP[which]),
                enable_async_checkpointing=False,
                temporary_path_class=ManifestFirst,
                save_root_metadata=False,  # nothing but step folders in latest/ and best/, as before
                num_deletion_threads=1,  # one shutil.rmtree per pruned step, as before, on any number of cores
            )
            self._managers[which] = ocp.CheckpointManager(self._folder(which), options=options)
        return self._managers[which]

    def _close_managers(self) -> None:
        for manager in self._managers.values():
            manager.close()
        self._managers.clear()

    def _reader(self, kind: str) -> ocp.Checkpointer:
        """A restore-only Checkpointer per kind of restore ('state': whole; 'weights': partial), as Orbax binds an
        item's handler at its first use and refuses a `PyTreeRestore` where it has a `StandardRestore`."""
        if kind not in self._readers:
            self._readers[kind] = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
        return self._readers[kind]

    def _set_aside(self, epoch: int, damaged: set[Step]) -> None:
        """Move aside what a run continuing from `epoch` would trip over (`set_aside_reason`)."""
        stamp = set_aside_stamp()
        for which in KEEP:
            folder = self._folder(which)
            for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                finished = path.name.isdigit()
                step = int(path.name) if finished else None
                reason = set_aside_reason(finished, step, epoch, (which, step) in damaged)
                if reason:
                    move_aside(path, self.run_dir, reason, stamp)

    def _state_reader(self, like: Any, ema_stand_in: bool = False) -> Reader:
        """Reads a whole step (weights, optimizer state, step) into the structure and shardings of `like`; with
        `ema_stand_in`, a latest step's EMA weights take the place of its trained ones (a best step's stand-in)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)

        def read(kind: str, path: Path) -> tuple[Any, dict[str, Any]]:
            restored = self._reader("state").restore(
                path, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore())
            )
            stand_in = ema_stand_in and kind == "latest"
            return (ema_weights(restored.state) if stand_in else restored.state), restored.record

        return read

    def _restore_first(self, which: str, read: Reader) -> tuple[Any, dict[str, Any]]:
        """The first readable `which` checkpoint in the policy's order (`best_order` for 'best'), read with `read`;
        `CheckpointError` when none is."""
        newest_verified = self._newest_verified()
        if which == "latest":
            candidates = resume_order(self._all_steps(), best_is_full_state=False)
        else:
            candidates = best_order(self._all_steps(), lambda best: self._committed(*best, newest_verified))
        loaded, failed = self._first_readable(candidates, read, newest_verified)
        if loaded is None:
            raise self._nothing_left(which, failed)
        return loaded[1]

    def _all_steps(self) -> list[Step]:
        """Every step folder of latest/ and best/, finished or not."""
        return [Step(which, epoch) for which in KEEP for epoch in self.steps(which)]

    def _folder(self, which: str) -> Path:
        if which not in KEEP:
            raise ValueError(f"unknown checkpoint {which!r}: expected 'latest' or 'best'")
        return self.root / which

    def _name(self, which: str, epoch: int) -> str:
        return str(self.run_dir / "checkpoints" / which / str(epoch))

    def _newest_verified(self) -> int:
        """The newest epoch of a step with a manifest; 0 when none has one (a run saved before manifests)."""
        return max(
            (e for w in KEEP for e in self.steps(w) if (self._folder(w) / str(e) / MANIFEST).is_file()), default=0
        )

    def _committed(self, which: str, epoch: int, newest_verified: int) -> bool:
        """Whether a step is a finished save: it has its manifest, or it has none but is older than the newest
        step that has one (saved before manifests existed: a save cut short is always the newest)."""
        return (self._folder(which) / str(epoch) / MANIFEST).is_file() or epoch < newest_verified or not newest_verified

    def _load(self, which: str, epoch: int, read: Reader, newest_verified: int) -> tuple[Any, dict[str, Any]]:
        """Verify and read one step; `Unreadable` says why it cannot be used."""
        path, name = self._folder(which) / str(epoch), self._name(which, epoch)
        if (path / MANIFEST).is_file():
            verify_manifest(path, name)
        elif not self._committed(which, epoch, newest_verified):
            raise Unreadable(f"{name} has no {MANIFEST}: its save was cut short (or the manifest was deleted)")
        else:
            warn(
                f"{name} has no {MANIFEST} (saved before checkpoints had checksums, or cut short before its "
                "manifest); restoring it unverified"
            )
        try:
            return read(which, path)
        except Exception as err:  # Orbax and TensorStore raise many kinds; any of them means this step is unusable
            raise Unreadable(f"{name} is unreadable ({first_line(err)})") from None

    def _first_readable(
        self, candidates: list[Step], read: Reader, newest_verified: int
    ) -> tuple[tuple[Step, tuple[Any, dict[str, Any]]] | None, list[tuple[Step, str]]]:
        """`checkpoint_policy.first_readable` over step folders: verified, then read with `read`."""
        return first_readable(
            candidates, lambda c: self._load(c[0], c[1], read, newest_verified), lambda c: self._name(*c)
        )

    def _nothing_left(self, which: str, failed: list[tuple[Step, str]], finished_epochs: int = 0) -> CheckpointError:
        missing = f"{self.run_dir / 'checkpoints' / which} is missing or empty"
        return nothing_left(self.run_dir, which, [why for _, why in failed], missing, finished_epochs)
