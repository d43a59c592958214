"""The PyTorch baseline's crash-safe checkpoints, under the policy of `fer_jax.train.checkpoint_policy`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from fer_jax.files import write_atomic, write_json
from fer_jax.train.checkpoint_policy import (
    MANIFEST,
    Unreadable,
    best_order,
    file_digest,
    first_line,
    first_readable,
    kept,
    move_aside,
    nothing_left,
    resume_order,
    set_aside_reason,
    set_aside_stamp,
    warn,
)


@dataclass(frozen=True)
class TorchFile:
    """One checkpoint file of the baseline and what its manifest entry says about it."""

    which: str
    """'latest' or 'best'."""
    path: Path
    epoch: int | None
    """From the manifest entry its checksum matches; None without one."""
    problem: str = ""
    """Why it cannot be trusted (no entry matches it); '' when verified, or unverified in a run without a manifest."""


class TorchCheckpoints:
    """The baseline's checkpoints, under the policy of `fer_jax.train.checkpoint_policy` (as `RunCheckpoints`).

    `checkpoints/best.pt` (the model's state dict), `latest.pt` and `latest.previous.pt` (model,
    optimizer and record) and `checksums.json`: the kind, epoch, size and sha256 of each file saved.
    A save writes `<kind>.next.pt` (temporary file, fsync, rename), adds its entry to the manifest
    (the commit point), then renames latest.pt to latest.previous.pt and the new file into place.
    Files are recognised by their checksum, whatever their name, so a kill between two renames
    leaves each file with its epoch; a file no entry matches is damaged or a save cut short. A run
    saved before manifests (none here) restores unverified, with a warning.
    """

    NAMES: ClassVar[dict[str, tuple[str, ...]]] = {
        "latest": ("latest.pt", "latest.previous.pt", "latest.next.pt"),
        "best": ("best.pt", "best.next.pt"),
    }
    """Where each kind of checkpoint may be, newest name first."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.root = run_dir / "checkpoints"

    def save(self, which: str, epoch: int, obj: Any) -> None:
        """Save `obj` as epoch `epoch` of `which` ('latest' or 'best'); keeps 2 latest and 1 best."""
        new = self.root / f"{which}.next.pt"
        save_torch(new, obj)
        entries = [e for e in self._entries() or [] if (e["kind"], e["epoch"]) != (which, epoch)]
        entries.append({"kind": which, "epoch": epoch, **file_digest(new)})
        write_json(self.root / MANIFEST, {"files": entries})
        if which == "latest" and (self.root / "latest.pt").is_file():
            os.replace(self.root / "latest.pt", self.root / "latest.previous.pt")
        os.replace(new, self.root / f"{which}.pt")
        kept_epochs = kept((e["epoch"] for e in entries if e["kind"] == which), which)
        write_json(
            self.root / MANIFEST, {"files": [e for e in entries if e["kind"] != which or e["epoch"] in kept_epochs]}
        )

    def resume(self, device: torch.device, finished_epochs: int) -> dict[str, Any] | None:
        """The newest readable latest checkpoint ({'model', 'optimizer', 'record'}), or None to start over.

        Tries the latest files in the policy's order (`resume_order`: a file no checksum matches first, so that
        it is named in the warning); best.pt holds the weights alone, so it never stands in. Sets aside files a
        continued run would trip over (damaged, cut short, or newer than the epoch it continues from). None only
        when no latest file is readable or trusted and metrics.jsonl records no epoch; `CheckpointError` when
        epochs finished but no latest checkpoint is readable.
        """
        files = self._files()
        loaded, failed = first_readable(
            resume_order(files, best_is_full_state=False), lambda f: self._load(f, device), self._name_of
        )
        trusted = any(f.which == "latest" and not f.problem for f in files)
        if loaded is None and (finished_epochs or trusted):
            problems = [why for _, why in failed]
            raise nothing_left(self.run_dir, "latest", problems, f"{self.root} holds none", finished_epochs)
        chosen, checkpoint = loaded if loaded else (None, None)
        epoch = checkpoint["record"]["epoch"] if checkpoint else 0
        stamp, unusable = set_aside_stamp(), {f.path for f, _ in failed}
        for file in files:
            reason = set_aside_reason(True, file.epoch, epoch, bool(file.problem) or file.path in unusable)
            if file != chosen and reason:
                move_aside(file.path, self.run_dir, reason, stamp)
        if chosen is None:
            print(f"{self.run_dir}: no epoch had finished and been saved; starting it from the beginning")
        return checkpoint

    def restore_best(self, best_epoch: int, device: torch.device) -> dict[str, Any]:
        """The model state dict of epoch `best_epoch`: best.pt, or a latest checkpoint of that epoch when best.pt
        is damaged (`best_order`); `CheckpointError` when neither is readable."""
        files = [  # a best file of unknown epoch (damaged, or saved before manifests) stands for the run's best
            replace(f, epoch=best_epoch) if f.which == "best" and f.epoch is None else f for f in self._files()
        ]
        candidates = best_order(files, epoch=best_epoch)
        loaded, failed = first_readable(candidates, lambda f: self._load(f, device), self._name_of)
        if loaded is None:
            problems = [why for _, why in failed]
            raise nothing_left(self.run_dir, "best", problems, "best.pt is missing", of=f" of epoch {best_epoch}")
        file, obj = loaded
        return obj["model"] if file.which == "latest" else obj

    def _load(self, file: TorchFile, device: torch.device) -> Any:
        """What one file holds, if it matches its checksum and unpickles; `Unreadable` says why not."""
        if file.problem:
            raise Unreadable(self._why(file))
        try:
            return torch.load(file.path, map_location=device, weights_only=True)
        except Exception as err:  # any unpickling failure means this file is unusable
            raise Unreadable(f"{self._name(file.path)} is unreadable ({first_line(err)})") from None

    def _name_of(self, file: TorchFile) -> str:
        return self._name(file.path)

    def _name(self, path: Path) -> str:
        return str(self.run_dir / "checkpoints" / path.name)

    def _why(self, file: TorchFile) -> str:
        return f"{self._name(file.path)} {file.problem}"

    def _entries(self) -> list[dict[str, Any]] | None:
        """The manifest's entries; None when there is none (a run saved before manifests)."""
        path = self.root / MANIFEST
        if not path.is_file():
            return None
        try:
            return list(json.loads(path.read_text())["files"])
        except (ValueError, KeyError, TypeError):
            return []

    def _files(self) -> list[TorchFile]:
        """The checkpoint files here, each with the epoch of the manifest entry its checksum matches."""
        entries = self._entries()
        files = []
        for kind, names in self.NAMES.items():
            for path in (self.root / name for name in names if (self.root / name).is_file()):
                if entries is None:
                    warn(
                        f"{self._name(path)}: no {MANIFEST} (saved before checkpoints had checksums); "
                        "using it unverified"
                    )
                    files.append(TorchFile(kind, path, None))
                    continue
                digest = file_digest(path)
                epochs = [
                    e["epoch"]
                    for e in entries
                    if e["kind"] == kind and (e["size"], e["sha256"]) == (digest["size"], digest["sha256"])
                ]
                files.append(
                    TorchFile(kind, path, epochs[0])
                    if epochs
                    else TorchFile(
                        kind, path, None, f"matches no checksum in {MANIFEST}: damaged, or its save was cut short"
                    )
                )
        return files


def save_torch(path: Path, obj: Any) -> None:
    """`torch.save` written atomically (temporary file, fsync, rename)."""
    write_atomic(path, lambda handle: torch.save(obj, handle), mode="wb")
