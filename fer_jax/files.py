"""Crash-safe file writes (a temporary file beside the target, renamed into place), guarded JSON reads and file
hashes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any


class FileFormatError(ValueError):
    """A file that cannot be read or does not hold what it should; the message names it, in one line."""


class WriteError(Exception):
    """A file that cannot be written where asked (a folder in its place, no permission, a full disk); one line."""


def output_problem(path: str | os.PathLike, folder: bool = False) -> str | None:
    """Why a file (with `folder`, a folder) cannot be written at `path` (a folder, or a file, is in its place; a
    file is where a parent folder must be), or None: for commands to check their outputs before any work."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        return "a file is there, not a folder"
    if not folder and path.is_dir():
        return "a folder is there"
    blocking = next((parent for parent in path.parents if parent.exists()), None)
    if blocking is not None and not blocking.is_dir():
        return f"{blocking} is a file, not a folder"
    return None


def write_atomic(path: str | os.PathLike, write: Callable[[IO[Any]], None], mode: str = "w") -> None:
    """Call `write(handle)` on a temporary file, fsync it, and rename it to `path`."""
    path = Path(path)
    problem = output_problem(path)
    if problem:
        raise WriteError(f"cannot write {path}: {problem}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        raise WriteError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise WriteError(f"cannot write {path}: {err.strerror or err}") from None
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=False) + "\n"))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    write_atomic(path, lambda f: f.writelines(json.dumps(row) + "\n" for row in rows))


def read_json(path: str | os.PathLike, what: str, kind: type = dict) -> Any:
    """The JSON value in `path`, which must be a `kind`; a one-line FileFormatError naming the file and `what` it
    should be (a missing file, a folder, binary garbage, bad or absurdly nested JSON, another type)."""
    try:
        value = json.loads(Path(path).read_bytes())
    except (OSError, ValueError, RecursionError) as err:
        raise FileFormatError(f"{path}: not a readable {what} ({_reason(err)})") from None
    if not isinstance(value, kind):
        raise FileFormatError(f"{path}: not a {what} (a JSON {type(value).__name__}, expected {_JSON_NAMES[kind]})")
    return value


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a JSON Lines file (e.g. metrics.jsonl), each a JSON object; FileFormatError naming the file and
    line otherwise."""
    try:
        lines = Path(path).read_bytes().decode().splitlines()
    except (OSError, ValueError) as err:
        raise FileFormatError(f"{path}: not readable ({_reason(err)})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as err:
            raise FileFormatError(f"{path} line {number}: not JSON ({_reason(err)})") from None
        if not isinstance(row, dict):
            raise FileFormatError(f"{path} line {number}: a JSON {type(row).__name__}, expected an object")
        rows.append(row)
    return rows


_JSON_NAMES = {dict: "an object", list: "an array", str: "a string"}


def _reason(err: BaseException) -> str:
    """An exception as a short phrase: the first line of its message (at most 200 characters), else its type."""
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read 1 MB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
