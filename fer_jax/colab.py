"""Google Colab in one call, the first cell of every notebook: install fer-jax, fetch FER-2013 with a Kaggle key.

Outside Colab `setup()` does nothing. On a fresh Colab runtime nothing can import this module yet, so the
notebook's first cell clones the repository into `fer-jax/` and puts that checkout on `sys.path`; `setup()`
then installs the checkout with pip (with the `gpu` extra when `nvidia-smi` lists a GPU), takes the Kaggle
credentials from Colab's secrets `KAGGLE_USERNAME` and `KAGGLE_KEY`, else from a `kaggle.json` uploaded to
the working folder, downloads FER-2013 with `fer_jax.data.download` (what `fer-jax download` runs) and
points `$FER2013_ZIP` at the archive, where every notebook looks for it.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fer_jax.data.download import ZIP_NAME, DownloadError, download_fer2013

SECRETS = ("KAGGLE_USERNAME", "KAGGLE_KEY")
"""The Colab secrets (key icon in Colab's left bar) holding the Kaggle API credentials."""
UPLOADED_TOKEN = "kaggle.json"
"""Kaggle's API token file (kaggle.com > Settings > API > Create New Token), uploaded to the working folder."""


def on_colab() -> bool:
    """Whether this is a Colab kernel (which imports `google.colab` when it starts)."""
    return "google.colab" in sys.modules


def setup(dest: str | os.PathLike = "data") -> Path | None:
    """On Colab: install this checkout, download FER-2013 to `dest/fer2013.zip` and set $FER2013_ZIP to it.

    Returns the archive's path, or None outside Colab and when there is no archive (the printed line says why).
    An archive that $FER2013_ZIP or `dest` already holds is used as it is, without credentials.
    """
    if not on_colab():
        return None
    install_checkout()
    archive = existing_archive(Path(dest))
    if archive is None:
        source = kaggle_credentials(Path.cwd())
        if source is None:
            print(
                f"FER-2013 not downloaded: no Kaggle credentials. Add the Colab secrets {' and '.join(SECRETS)} "
                f"(key icon on the left, notebook access on), or upload {UPLOADED_TOKEN} (kaggle.com > Settings > "
                f"API > Create New Token) to {Path.cwd()}, then run this cell again."
            )
            return None
        print(f"Kaggle credentials: {source}")
        try:
            archive = download_fer2013(dest)
        except DownloadError as error:
            print(f"FER-2013 not downloaded: {error}")
            return None
    os.environ["FER2013_ZIP"] = str(archive.resolve())
    print(f"FER2013_ZIP={os.environ['FER2013_ZIP']}: the notebooks read FER-2013 from there")
    return archive


def install_checkout() -> None:
    """pip-install the checkout this module was imported from, with the `gpu` extra on a GPU runtime.

    Editable, so the package, the notebooks and the repository's results/ and experiments/ stay one folder.
    """
    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / "pyproject.toml").is_file():
        print(f"fer-jax is installed from {checkout} (not a checkout): nothing to install")
        return
    gpu = has_gpu()
    target = f"{checkout}[gpu]" if gpu else str(checkout)
    print(f"Installing fer-jax from {checkout}" + (" with the gpu extra (a GPU runtime)" if gpu else " (no GPU)"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--editable", target], check=True)
    importlib.invalidate_caches()  # the running kernel then finds the packages pip just added


def has_gpu() -> bool:
    """Whether `nvidia-smi -L` lists an NVIDIA GPU (Colab's GPU runtimes have one, its CPU and TPU ones do not)."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listing.returncode == 0 and "GPU" in listing.stdout


def existing_archive(dest: Path) -> Path | None:
    """The FER-2013 archive already here: $FER2013_ZIP if it names a file, else `dest/fer2013.zip` if present."""
    for candidate in (os.environ.get("FER2013_ZIP"), dest / ZIP_NAME):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def kaggle_credentials(folder: Path) -> str | None:
    """Put Kaggle credentials into $KAGGLE_USERNAME and $KAGGLE_KEY, where `download_fer2013` finds them.

    From Colab's secrets when both are set and readable, else from `folder/kaggle.json`. Returns where they
    came from, or None when neither is there.
    """
    from google.colab import userdata

    unreadable = tuple(
        getattr(userdata, name)
        for name in ("SecretNotFoundError", "NotebookAccessError", "TimeoutException")
        if hasattr(userdata, name)
    )
    try:
        values = [userdata.get(name) for name in SECRETS]
    except unreadable:
        values = []
    if len(values) == len(SECRETS) and all(values):
        os.environ.update(zip(SECRETS, values))
        return f"Colab secrets {', '.join(SECRETS)}"

    token = folder / UPLOADED_TOKEN
    if not token.is_file():
        return None
    try:
        fields = json.loads(token.read_text())
        username, key = fields["username"], fields["key"]
    except (ValueError, KeyError, TypeError):
        print(f'{token}: not a Kaggle API token (expected {{"username": ..., "key": ...}}); ignored')
        return None
    os.environ.update(zip(SECRETS, (username, key)))
    return f"uploaded {token}"
