"""Crash-safe file writes (a temporary file beside the target, renamed into place) and file hashes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any


def write_atomic(path: str | os.PathLike, write: Callable[[IO[Any]], None], mode: str = "w") -> None:
    """Call `write(handle)` on a temporary file, fsync it, and rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=False) + "\n"))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    write_atomic(path, lambda f: f.writelines(json.dumps(row) + "\n" for row in rows))


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read 1 MB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
