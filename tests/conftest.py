from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# One XLA compilation cache for this test session, set before JAX is imported so that the test process,
# the fer-jax subprocesses and the notebook kernels (which inherit the environment) all use it. The many
# tiny runs compile the same train and eval steps again and again; each is compiled once per session and
# then loaded. A new folder per session: a run always starts from an empty cache, as on a fresh clone.
# pytest-xdist's workers inherit the variable from the controlling process, so they share the folder.
# A cache folder the user set is used and kept; the one made here is removed at the end.
CONTROLLER = "PYTEST_XDIST_WORKER" not in os.environ
OWN_XLA_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ and CONTROLLER
if OWN_XLA_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="fer-jax-test-xla-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# Decoded archives and data checks likewise go to one folder of this test session (never the user's cache),
# shared by the workers and the processes they start: the real archive is decoded and checked once a session
# (13 CPU-seconds), not once in every worker. Writes into it are atomic, so two workers may race harmlessly.
if CONTROLLER:
    os.environ["FER_JAX_CACHE"] = tempfile.mkdtemp(prefix="fer-jax-test-cache-")

from fer_jax.environment import use_project_xla_flags  # noqa: E402

use_project_xla_flags()  # the flags `fer-jax` and the experiments run with, for this process and its children

import pytest  # noqa: E402

from tests.fixtures import make_faces, write_zip  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FER2013_ZIP = ROOT.parent / "shared" / "datasets" / "fer2013.zip"
SMALL = {"Training": 4, "PublicTest": 2, "PrivateTest": 2}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if CONTROLLER:  # after every worker has finished
        shutil.rmtree(os.environ["FER_JAX_CACHE"], ignore_errors=True)
    if OWN_XLA_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Kaggle-layout zip with 4/2/2 JPEG faces per class in Training/PublicTest/PrivateTest."""
    return write_zip(make_faces(SMALL), tmp_path_factory.mktemp("tiny") / "fer2013.zip")


@pytest.fixture(scope="session")
def fer2013_zip() -> Path:
    """The real Kaggle archive, from $FER2013_ZIP or ../shared/datasets/fer2013.zip.

    Missing: a skip on a developer's machine, a failure under CI=true.
    """
    path = Path(os.environ.get("FER2013_ZIP") or DEFAULT_FER2013_ZIP).resolve()
    if not path.is_file():
        message = f"real FER-2013 archive not found at {path} (set FER2013_ZIP)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path
