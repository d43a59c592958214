"""The notebooks: committed executed and small; run top to bottom on small settings, their key numbers agreeing
with results/; and their Colab setup cell, run here against a stand-in `google.colab` and a fake Kaggle.

Colab and Kaggle cannot be reached from the tests, so the setup cell meets them at the boundary: `google.colab`
is a stand-in module (its secrets), `git clone` and `pip install` are recorded instead of run (the clone is a
copy of this checkout's package), and Kaggle is `tests.test_download.FakeKaggle` behind `requests`, so the
real kaggle client and `fer_jax.data.download` run end to end.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from fer_jax.data.fer2013 import EMOTIONS, SPLITS
from tests.test_download import ARCHIVE, KEY, USER, fake_kaggle, kaggle_env  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
RESULTS = ROOT / "results"
REPOSITORY = "OWNER/REPO"
"""The placeholder for where the repository is hosted (docs/experiments.md says so once)."""
CLONE = ["git", "clone", "--depth", "1", f"https://github.com/{REPOSITORY}", "fer-jax"]


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def printed(notebook: nbformat.NotebookNode) -> str:
    """Everything the notebook's cells printed."""
    return "".join(
        o.get("text", "") for cell in code_cells(notebook) for o in cell.outputs if o.output_type == "stream"
    )


def results(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def test_there_are_notebooks():
    assert [path.name[:3] for path in NOTEBOOKS] == ["01_", "02_", "03_", "04_"]


def test_committed_notebooks_show_their_outputs_say_what_made_them_and_stay_small():
    assert sum(path.stat().st_size for path in NOTEBOOKS) < 3_000_000
    for path in NOTEBOOKS:
        notebook = read(path)
        first = notebook.cells[0]
        assert first.cell_type == "markdown", path.name
        assert f"jupyter execute --inplace notebooks/{path.name}`" in first.source, path.name
        assert re.search(r"\d{4}-\d{2}-\d{2}", first.source) and "`lscpu`'s model name" in first.source, path.name
        cells = code_cells(notebook)
        assert [cell.execution_count for cell in cells] == list(range(1, len(cells) + 1)), path.name  # one run
        outputs = [output for cell in cells for output in cell.outputs]
        assert not [o for o in outputs if o.output_type == "error"], path.name
        assert any("image/png" in o.get("data", {}) for o in outputs), path.name
        assert all(cell.outputs for cell in cells[1:]), path.name  # every cell after the setup cell shows something


def test_every_notebook_starts_with_the_same_colab_setup_cell_and_has_a_colab_link():
    cells = [read(path).cells[1] for path in NOTEBOOKS]
    assert all(cell.cell_type == "code" for cell in cells)
    assert len({cell.source for cell in cells}) == 1
    assert f"subprocess.run({CLONE!r}, check=True)".replace("'", '"') in cells[0].source
    pages = {page: (ROOT / page).read_text() for page in ("docs/experiments.md", "README.md")}
    for path in NOTEBOOKS:
        link = f"https://colab.research.google.com/github/{REPOSITORY}/blob/main/notebooks/{path.name}"
        for page, text in pages.items():
            assert link in text, (page, path.name)


# Each notebook, executed on small settings: what to print at its end, and what that must agree with.
PROBES = {
    "01_data_tour.ipynb": 'print(json.dumps({"counts": counts, "sha256": report["dataset_sha256"]}))',
    "02_train_seed_cnn.ipynb": (
        'print(json.dumps({"recipe_epochs": get_config().train.epochs, "run": results}, default=str))'
    ),
    "03_jax_vs_pytorch.ipynb": (
        'print(json.dumps({"logit_differences": [torch_to_flax_diff, flax_to_torch_diff], '
        '"seeds": report["settings"]["seeds"]}))'
    ),
    "04_what_the_network_sees.ipynb": (
        'print(json.dumps({"accuracy": accuracy, "faces": len(test), "weights": classifier.info["file"]}))'
    ),
}


def check_data_tour(found: dict, notebook: nbformat.NotebookNode) -> None:
    committed = results("data_check.json")
    assert found["sha256"] == committed["dataset_sha256"]
    for split in SPLITS:
        assert found["counts"][split] == [committed["splits"][split]["class_counts"][e] for e in EMOTIONS], split


def check_training(found: dict, notebook: nbformat.NotebookNode) -> None:
    recipe = results("seed_cnn_onecycle.json")
    assert found["recipe_epochs"] == recipe["epochs"]  # the notebook's recipe is the committed run's
    text = printed(notebook)
    assert f"PrivateTest {recipe['test_accuracy']:.4f} (flip TTA {recipe['test_accuracy_tta']:.4f})" in text
    assert f"PublicTest ({recipe['val_accuracy']:.4f}, epoch {recipe['best_epoch']})" in text
    run = found["run"]
    assert (run["train_images"], run["val_images"], run["test_images"], run["epochs"]) == (512, 256, 256, 1)
    assert 0.0 <= run["test_accuracy"] <= 1.0


def check_comparison(found: dict, notebook: nbformat.NotebookNode) -> None:
    committed = results("compare_cpu.json")
    jax_accuracy, torch_accuracy = (
        committed["frameworks"][framework]["summary"]["test_accuracy"]["mean"] for framework in ("jax", "pytorch")
    )
    assert f"JAX {jax_accuracy:.4f}, PyTorch {torch_accuracy:.4f}" in printed(notebook)
    assert found["seeds"] == [0]
    assert max(found["logit_differences"]) < 1e-4


def check_inspection(found: dict, notebook: nbformat.NotebookNode) -> None:
    recipe = results("seed_cnn_onecycle.json")
    shipped = json.loads((ROOT / "fer_jax" / "weights" / "seed_cnn.json").read_text())
    assert found["weights"] == "seed_cnn.msgpack" and shipped["test_accuracy"] == recipe["test_accuracy"]
    assert found["faces"] == recipe["test_images"]
    # float16 weights move the probabilities by ~2e-3: a few of the 3,589 faces may change class
    assert abs(found["accuracy"] - recipe["test_accuracy"]) <= 0.005


CHECKS = {
    "01_data_tour.ipynb": check_data_tour,
    "02_train_seed_cnn.ipynb": check_training,
    "03_jax_vs_pytorch.ipynb": check_comparison,
    "04_what_the_network_sees.ipynb": check_inspection,
}


@pytest.mark.real_data
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_and_agrees_with_the_results(path, fer2013_zip, tmp_path, monkeypatch):
    monkeypatch.setenv("FER_JAX_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("FER2013_ZIP", str(fer2013_zip))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    committed = hashlib.sha256(path.read_bytes()).hexdigest()
    notebook = read(path)  # executed in memory, in a temporary folder: the committed file is never rewritten
    notebook.cells.append(new_code_cell("import json\n" + PROBES[path.name]))
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    probe = notebook.cells.pop()
    CHECKS[path.name](json.loads(probe.outputs[-1].text), notebook)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == committed


# The Colab setup cell --------------------------------------------------------------------------------------------

SETUP_CELL = read(NOTEBOOKS[0]).cells[1].source


class Boundary:
    """`subprocess.run` with git and pip recorded instead of run; every other command (nvidia-smi) runs for real.

    A `git clone` leaves what the cell needs of a clone: this checkout's package and pyproject.toml.
    """

    def __init__(self, run) -> None:
        self.run = run
        self.commands: list[list[str]] = []

    def __call__(self, args, *rest, **options):
        args = list(args)
        if args[:2] == ["git", "clone"]:
            self.commands.append(args)
            clone = Path(args[-1])
            ignore = shutil.ignore_patterns("__pycache__", "*.msgpack", "*.onnx")
            shutil.copytree(ROOT / "fer_jax", clone / "fer_jax", ignore=ignore)
            shutil.copy(ROOT / "pyproject.toml", clone)
            return subprocess.CompletedProcess(args, 0)
        if args[:3] == [sys.executable, "-m", "pip"]:
            self.commands.append(args)
            return subprocess.CompletedProcess(args, 0)
        return self.run(args, *rest, **options)


@pytest.fixture
def content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kaggle_env: Path) -> Iterator[Path]:  # noqa: F811
    """Colab's working folder /content, an empty PATH (no nvidia-smi) and no $FER2013_ZIP; what the cell
    changes in the environment and sys.path is put back afterwards."""
    saved_environ, saved_path = dict(os.environ), list(sys.path)
    folder = tmp_path / "content"
    folder.mkdir()
    (tmp_path / "bin").mkdir()
    monkeypatch.chdir(folder)
    os.environ["PATH"] = str(tmp_path / "bin")
    os.environ.pop("FER2013_ZIP", None)
    yield folder
    os.environ.clear()
    os.environ.update(saved_environ)
    sys.path[:] = saved_path


@pytest.fixture
def boundary(monkeypatch: pytest.MonkeyPatch) -> Boundary:
    recorder = Boundary(subprocess.run)
    monkeypatch.setattr(subprocess, "run", recorder)
    return recorder


@pytest.fixture
def fresh_runtime() -> Iterator[None]:
    """No fer_jax module loaded, as on a fresh Colab runtime: the cell must import the package from its clone.
    The test session's modules are put back afterwards."""
    ours = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "fer_jax"}
    for name in ours:
        del sys.modules[name]
    yield
    for name in [name for name in sys.modules if name.split(".")[0] == "fer_jax"]:
        del sys.modules[name]
    sys.modules.update(ours)


def stand_in_colab(monkeypatch: pytest.MonkeyPatch, secrets: dict[str, str], access: bool = True) -> None:
    """`google.colab` with `userdata.get` as Colab's: a secret's value, or the errors Colab raises."""
    userdata = types.ModuleType("google.colab.userdata")

    class SecretNotFoundError(Exception):
        pass

    class NotebookAccessError(Exception):
        pass

    def get(key: str) -> str:
        if key not in secrets:
            raise SecretNotFoundError(f"Secret {key} does not exist.")
        if not access:
            raise NotebookAccessError(f"Notebook does not have access to secret {key}")
        return secrets[key]

    userdata.SecretNotFoundError, userdata.NotebookAccessError, userdata.get = (
        SecretNotFoundError,
        NotebookAccessError,
        get,
    )
    colab = types.ModuleType("google.colab")
    colab.userdata = userdata
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", userdata)


def add_gpu(content: Path) -> None:
    """An `nvidia-smi` on PATH that lists one GPU, as on Colab's GPU runtimes."""
    tool = content.parent / "bin" / "nvidia-smi"
    tool.write_text("#!/bin/sh\necho 'GPU 0: Tesla T4 (UUID: GPU-00000000-0000-0000-0000-000000000000)'\n")
    tool.chmod(0o755)


def run_setup_cell() -> None:
    exec(compile(SETUP_CELL, "setup cell", "exec"), {"__name__": "__main__"})


def pip_install(target: Path, extra: str = "") -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--quiet", "--editable", f"{target}{extra}"]


def test_setup_cell_does_nothing_outside_colab(content, boundary, fake_kaggle, capsys):  # noqa: F811
    assert "google.colab" not in sys.modules
    run_setup_cell()
    assert boundary.commands == []
    assert fake_kaggle.requests == []
    assert list(content.iterdir()) == []
    assert "FER2013_ZIP" not in os.environ and "KAGGLE_KEY" not in os.environ
    assert capsys.readouterr().out == ""


def test_setup_cell_on_a_colab_gpu_runtime_with_secrets(
    content,
    boundary,
    fake_kaggle,  # noqa: F811
    fresh_runtime,
    monkeypatch,
    capsys,
):
    stand_in_colab(monkeypatch, {"KAGGLE_USERNAME": USER, "KAGGLE_KEY": KEY})
    add_gpu(content)

    run_setup_cell()

    clone = content / "fer-jax"
    assert boundary.commands == [CLONE, pip_install(clone, "[gpu]")]
    assert Path(sys.modules["fer_jax.colab"].__file__).is_relative_to(clone)  # imported from the clone
    assert len(fake_kaggle.api_calls()) == 1  # FakeKaggle answers 401 to other credentials
    archive = content / "data" / "fer2013.zip"
    assert archive.read_bytes() == ARCHIVE
    assert os.environ["FER2013_ZIP"] == str(archive)
    out = capsys.readouterr().out
    assert "with the gpu extra" in out and "Colab secrets KAGGLE_USERNAME, KAGGLE_KEY" in out

    run_setup_cell()  # again, e.g. after a restart: no second clone, no second download
    assert boundary.commands == [CLONE, pip_install(clone, "[gpu]"), pip_install(clone, "[gpu]")]
    assert len(fake_kaggle.api_calls()) == 1
    assert os.environ["FER2013_ZIP"] == str(archive)


@pytest.mark.parametrize("secrets", ["none", "denied"])
def test_setup_cell_on_a_colab_cpu_runtime_with_an_uploaded_kaggle_json(
    secrets,
    content,
    boundary,
    fake_kaggle,  # noqa: F811
    fresh_runtime,
    monkeypatch,
    capsys,
):
    # "denied": the secrets exist but this notebook may not read them
    stand_in_colab(monkeypatch, {} if secrets == "none" else {"KAGGLE_USERNAME": "x", "KAGGLE_KEY": "y"}, access=False)
    (content / "kaggle.json").write_text(json.dumps({"username": USER, "key": KEY}))

    run_setup_cell()

    assert boundary.commands == [CLONE, pip_install(content / "fer-jax")]  # no GPU: no gpu extra
    assert len(fake_kaggle.api_calls()) == 1
    assert (content / "data" / "fer2013.zip").read_bytes() == ARCHIVE
    assert os.environ["FER2013_ZIP"] == str(content / "data" / "fer2013.zip")
    assert f"uploaded {content / 'kaggle.json'}" in capsys.readouterr().out


def test_setup_cell_on_colab_without_credentials_says_so_in_one_line(
    content,
    boundary,
    fake_kaggle,  # noqa: F811
    fresh_runtime,
    monkeypatch,
    capsys,
):
    stand_in_colab(monkeypatch, {})

    run_setup_cell()

    assert boundary.commands == [CLONE, pip_install(content / "fer-jax")]
    assert fake_kaggle.requests == []
    assert not (content / "data").exists() and "FER2013_ZIP" not in os.environ
    (message,) = [line for line in capsys.readouterr().out.splitlines() if "FER-2013" in line]
    assert message.startswith("FER-2013 not downloaded: no Kaggle credentials")
    assert "KAGGLE_USERNAME" in message and "KAGGLE_KEY" in message and "kaggle.json" in message
