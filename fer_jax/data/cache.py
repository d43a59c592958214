"""Where decoded datasets and their checks are cached: one absolute folder, keyed by the archive's content.

A dataset file (the Kaggle zip or fer2013.csv) is identified by the sha256 of its
bytes, never by its name: `<cache root>/<stem>-<sha256[:16]>/` holds what was
derived from exactly that content (the decoded splits, the data check, the TFDS
copy), with `source.json` recording the full hash. A replaced archive of the same
name therefore gets a new folder, and the old derivations are never read for it.

The cache root is `$FER_JAX_CACHE`, else the user's cache folder
(`$XDG_CACHE_HOME/fer-jax`, `~/.cache/fer-jax`; `~/Library/Caches/fer-jax` on
macOS, `%LOCALAPPDATA%\\fer-jax` on Windows), so every working directory shares it.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from fer_jax.files import FileFormatError, read_json, sha256_of, write_json

CACHE_ENV = "FER_JAX_CACHE"
SOURCE_RECORD = "source.json"


class CacheError(FileFormatError):
    """A folder derived from one archive that would be used for another; the message says what to do."""


def default_cache_root() -> Path:
    """`$FER_JAX_CACHE`, else the platform's user cache folder + `fer-jax`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser().absolute()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (base / "fer-jax").absolute()


def cache_root(configured: str | os.PathLike | None) -> Path:
    """The configured cache folder made absolute, or `default_cache_root()` when none is configured."""
    return Path(configured).expanduser().absolute() if configured else default_cache_root()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (remembered per path, size and modification time within a process)."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).absolute()), stat.st_size, stat.st_mtime_ns)


def source_sha256(source: str | os.PathLike) -> str | None:
    """The sha256 a report records for a dataset source: the file's, or None for a folder (no single content)."""
    return file_sha256(source) if Path(source).is_file() else None


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of(path)


def content_folder(source: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """The cache folder of `source`'s content, created with its `source.json` if new.

    A folder whose `source.json` names another hash (a 16-digit prefix collision)
    is an error rather than a silent reuse.
    """
    source = Path(source)
    sha256 = file_sha256(source)
    folder = cache_root(root) / f"{source.stem}-{sha256[:16]}"
    if recorded_sha256(folder) is None:
        record_source(folder, source)
    else:
        check_source(folder, source, "cache folder")
    return folder


def record_source(folder: Path, source: str | os.PathLike) -> None:
    """Write `folder/source.json`: the sha256 (and size, path) of the dataset file what is in `folder` came from."""
    source = Path(source)
    write_json(
        folder / SOURCE_RECORD,
        {"sha256": file_sha256(source), "bytes": source.stat().st_size, "first_seen_as": str(source.absolute())},
    )


def recorded_sha256(folder: Path) -> str | None:
    """The sha256 `folder/source.json` records; None without a readable record (a warning for an unreadable one)."""
    record = folder / SOURCE_RECORD
    if not record.exists():
        return None
    try:
        sha256 = read_json(record, "source record").get("sha256")
    except FileFormatError as err:
        print(f"warning: {err}; writing it again", file=sys.stderr)
        return None
    return sha256 if isinstance(sha256, str) else None


def check_source(folder: Path, source: str | os.PathLike, what: str) -> None:
    """Refuse (`CacheError`) a `what` in `folder` whose source.json names another archive than `source`."""
    recorded, sha256 = recorded_sha256(folder), file_sha256(source)
    if recorded != sha256:
        raise CacheError(
            f"{folder}: {what} of the archive with sha256 {str(recorded)[:16]}..., not of {source} "
            f"({sha256[:16]}...); delete the folder or choose another one"
        )
