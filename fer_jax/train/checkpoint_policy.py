"""The checkpoint policy every trainer of fer-jax follows, framework-free: what is kept, how it is checked, in
which order a damaged checkpoint falls back, and what a resumed run sets aside.

Two checkpoints per run, under `RUN_DIR/checkpoints/`: 'latest' (the full training state, to resume) and
'best' (the weights selected on PublicTest, to report). `KEEP` of each survive a save: the previous latest is
the fallback when the newest is damaged. Every file saved is listed in a checksum manifest (`MANIFEST`) with
its size and sha256 before the save commits, and is verified against it before it is used.

Fallback order (`resume_order`, `best_order`): a resumed run tries the latest checkpoints, newest first, and
where a best checkpoint holds the full state, the best of an epoch after its latest; the best weights are the
newest best checkpoint, then the latest checkpoint of the same epoch. Each one that fails is named in a
one-line warning once one is readable (`first_readable`); none readable is one `CheckpointError` line
(`nothing_left`). A resumed run never deletes: what would be in its way (saves cut short, damaged
checkpoints, checkpoints newer than the epoch it continues from) is moved under `RUN_DIR/set-aside/`
(`set_aside_reason`, `move_aside`).

`fer_jax.train.checkpoints.RunCheckpoints` (Orbax, a folder per step) and
`fer_jax.baseline.checkpoints.TorchCheckpoints` (PyTorch, a file per checkpoint) store the checkpoints; this
module decides for both.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

from fer_jax.errors import CheckpointError
from fer_jax.files import sha256_of

MANIFEST = "checksums.json"
"""The checksum manifest of a run's checkpoints: the size and sha256 of each file saved."""
KEEP = {"latest": 2, "best": 1}
"""Checkpoints kept of each kind: the previous latest is the fallback when the newest is damaged."""
SET_ASIDE = "set-aside"
"""Folder in the run where `--resume` moves what it would otherwise drop, under a timestamp."""


class Candidate(Protocol):
    """A checkpoint the policy orders: its kind and its epoch (None when unknown: no manifest entry matches it)."""

    @property
    def which(self) -> str: ...

    @property
    def epoch(self) -> int | None: ...


class Step(NamedTuple):
    """A checkpoint named by its kind ('latest' or 'best') and epoch."""

    which: str
    epoch: int | None


C = TypeVar("C", bound=Candidate)
T = TypeVar("T")


class Unreadable(Exception):
    """One checkpoint cannot be used; the message names it and the damaged file."""


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def first_line(err: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def file_digest(path: Path) -> dict[str, Any]:
    """The size and sha256 of a file, as a manifest records them."""
    return {"size": path.stat().st_size, "sha256": sha256_of(path)}


def kept(epochs: Iterable[int], which: str) -> list[int]:
    """The epochs of `which` that survive a save: the newest `KEEP[which]`."""
    return sorted(epochs, reverse=True)[: KEEP[which]]


def newest_first(candidate: Candidate) -> float:
    """Sort key: newest epoch first, and first of all a checkpoint of unknown epoch, as a save cut short (which
    matches no manifest entry) is always the newest; ties keep their given order."""
    return -float("inf") if candidate.epoch is None else -candidate.epoch


def resume_order(candidates: Iterable[C], best_is_full_state: bool) -> list[C]:
    """The checkpoints a resumed run tries, in order: newest first (`newest_first`), at one epoch the latest before
    the best; best ones only where they hold the full training state (not the weights alone, nor EMA weights)."""
    usable = [c for c in candidates if c.which == "latest" or best_is_full_state]
    return sorted(usable, key=lambda c: (newest_first(c), c.which != "latest"))


def best_order(
    candidates: Sequence[C], final: Callable[[C], bool] = lambda c: True, epoch: int | None = None
) -> list[C]:
    """Where the selected weights are, in order: each best checkpoint, newest first, then the latest checkpoints
    of its epoch (which hold the same weights); older best ones only while `final(best)` is False (that best may
    be an unfinished save, so the one before it may still be the run's). Where the run's record names the best
    `epoch`: its best checkpoints, then its latest ones, even when no best checkpoint of that epoch is left."""
    if epoch is not None:
        return sorted((c for c in candidates if c.epoch == epoch), key=lambda c: c.which != "best")
    order: list[C] = []
    for best in sorted((c for c in candidates if c.which == "best"), key=newest_first):
        order.append(best)
        order += [c for c in candidates if c.which == "latest" and c.epoch is not None and c.epoch == best.epoch]
        if final(best):
            break
    return order


def first_readable(
    candidates: Iterable[C], load: Callable[[C], T], name: Callable[[C], str]
) -> tuple[tuple[C, T] | None, list[tuple[C, str]]]:
    """The first candidate `load` reads, with what it read; and the ones that failed before it with why (their
    `Unreadable` message), each warned about in one line naming the one used, once one is readable."""
    failed: list[tuple[C, str]] = []
    for candidate in candidates:
        try:
            loaded = load(candidate)
        except Unreadable as err:
            failed.append((candidate, str(err)))
            continue
        for _, why in failed:
            warn(f"{why}; using {name(candidate)}")
        return (candidate, loaded), failed
    return None, failed


def nothing_left(
    run_dir: str | Path, which: str, problems: Sequence[str], missing: str, finished_epochs: int = 0, of: str = ""
) -> CheckpointError:
    """The one-line error when no `which` checkpoint (`of`: e.g. ' of epoch 3') is readable: what failed (else
    `missing`), the epochs metrics.jsonl says finished, and what to do."""
    found = "; ".join(problems) or missing
    finished = f"; metrics.jsonl records {finished_epochs} finished epochs" if finished_epochs else ""
    todo = (
        "train it again in a new --run-dir, or put back its checkpoints from a copy"
        if which == "latest"
        else "its selected weights are lost: train the run again, or put back its checkpoints from a copy"
    )
    return CheckpointError(f"{run_dir}: no readable {which} checkpoint{of} ({found}{finished}); {todo}")


def set_aside_reason(finished: bool, epoch: int | None, resumed_epoch: int, damaged: bool) -> str | None:
    """Why a resumed run (continuing after `resumed_epoch`) moves a checkpoint aside, or None to keep it:
    an unfinished save, a checkpoint newer than where it continues (it saves that epoch again), or a damaged one."""
    if not finished:
        return "not a finished checkpoint: a save cut short"
    if epoch is not None and epoch > resumed_epoch:
        return f"newer than epoch {resumed_epoch}, which the run continues from and saves again"
    if damaged:
        return "damaged or unfinished"
    return None


def move_aside(path: Path, run_dir: Path, reason: str, stamp: str) -> Path:
    """Move `path` (inside `run_dir`) to `run_dir/set-aside/<stamp>/<its relative path>` and say so in one line."""
    relative = path.absolute().relative_to(run_dir.absolute())
    target = run_dir / SET_ASIDE / stamp / relative
    for number in itertools.count(1):
        if not target.exists():
            break
        target = run_dir / SET_ASIDE / stamp / relative.with_name(f"{relative.name}.{number}")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    print(f"Set aside {run_dir / relative} -> {target} ({reason})", flush=True)
    return target


@functools.cache
def set_aside_stamp() -> str:
    """The folder under `set-aside/` for what this process moves there: its start time and process id."""
    return time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"


def holds_checkpoints(run_dir: str | Path) -> bool:
    """Whether `run_dir/checkpoints` holds anything (a checkpoint, even an unfinished one)."""
    root = Path(run_dir) / "checkpoints"
    return root.is_dir() and any(root.iterdir())
