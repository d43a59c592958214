"""Fetch the FER-2013 archive (Kaggle dataset `msambare/fer2013`) with the official `kaggle` client.

The result is `dest/fer2013.zip`, written atomically: the client downloads into a
temporary folder inside `dest`, and only a complete, valid zip is moved into place.
Every failure is a `DownloadError` whose message is one line saying what to do.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from fer_jax.errors import DownloadError

KAGGLE_DATASET = "msambare/fer2013"
ZIP_NAME = "fer2013.zip"  # the kaggle client names the archive after the dataset slug

_CREDENTIALS_PLACES = (
    "put kaggle.json (from kaggle.com > Settings > API) in ~/.kaggle/ (or $KAGGLE_CONFIG_DIR) "
    "or set KAGGLE_USERNAME and KAGGLE_KEY"
)


def download_fer2013(dest: str | os.PathLike = "data", force: bool = False) -> Path:
    """Download the Kaggle FER-2013 archive to `dest/fer2013.zip` and return its path.

    An existing archive is reused unless `force`. Credentials come from kaggle.json
    (`~/.kaggle/` or `$KAGGLE_CONFIG_DIR`) or from `KAGGLE_USERNAME`/`KAGGLE_KEY`.
    """
    dest = Path(dest)
    target = dest / ZIP_NAME
    if target.exists() and not force:
        print(f"{target} already exists; not downloading it again (force=True to re-download)")
        return target

    import requests  # a dependency of kaggle; imported here so this module stays import-cheap

    try:
        api = _authenticated_api()
        dest.mkdir(parents=True, exist_ok=True)
        tmpdir = Path(tempfile.mkdtemp(prefix=".fer2013-download-", dir=dest))
        try:
            print(f"Downloading {KAGGLE_DATASET} from Kaggle to {target} ...")
            api.dataset_download_files(KAGGLE_DATASET, path=str(tmpdir), force=True, quiet=False, unzip=False)
            downloaded = tmpdir / ZIP_NAME
            if not zipfile.is_zipfile(downloaded):
                raise DownloadError(
                    f"Kaggle download of {KAGGLE_DATASET} did not produce a zip archive; "
                    "try again later, or pass --data PATH to a local copy"
                )
            os.replace(downloaded, target)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    except requests.exceptions.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise DownloadError(
                f"Kaggle rejected the credentials (HTTP {status}): check kaggle.json in ~/.kaggle/ "
                "(or $KAGGLE_CONFIG_DIR) or KAGGLE_USERNAME and KAGGLE_KEY"
            ) from exc
        raise DownloadError(f"Kaggle download of {KAGGLE_DATASET} failed: {_one_line(exc)}") from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise DownloadError(
            f"Kaggle could not be reached ({type(exc).__name__}); check the network, "
            "or pass --data PATH to a local copy of FER-2013"
        ) from exc
    except (requests.exceptions.RequestException, ValueError) as exc:
        raise DownloadError(f"Kaggle download of {KAGGLE_DATASET} failed: {_one_line(exc)}") from exc

    print(f"Saved {target}")
    return target


def _authenticated_api():
    """A `KaggleApi` that has found credentials, or DownloadError naming where to put them."""
    # `import kaggle` already tries to authenticate, printing a long help text and
    # swallowing its SystemExit when there are no credentials: keep that quiet.
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as exc:
        raise DownloadError(f"the kaggle package is not installed ({exc}): pip install kaggle") from exc

    api = KaggleApi()
    # KaggleApi fixes where kaggle.json lives once, when it is first imported; look it up now instead.
    config_dir = _kaggle_config_dir()
    api.config_dir = str(config_dir)
    api.config = str(config_dir / "kaggle.json")

    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            api.authenticate()  # no credentials at all: prints help, then exit(1)
    except SystemExit:
        raise DownloadError(f"Kaggle credentials not found: {_CREDENTIALS_PLACES}") from None
    print(output.getvalue(), end="")  # e.g. kaggle's warning about a world-readable kaggle.json
    return api


def _kaggle_config_dir() -> Path:
    """Where the kaggle client looks for kaggle.json (same rules as kaggle 2.x)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path.home() / ".kaggle"
    if legacy.exists() or not sys.platform.startswith("linux"):
        return legacy
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def _one_line(exc: BaseException) -> str:
    """The exception's message squeezed onto one line."""
    return " ".join(str(exc).split()) or type(exc).__name__
