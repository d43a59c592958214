"""`fer-jax predict` from a cold start: nothing on its path that the answer does not need (torch, the trainer),
and its compiled programs kept in a per-machine cache that a second process loads and a damaged entry never
breaks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_ON_THE_PREDICT_PATH = (
    "torch",
    "torchvision",
    "matplotlib",
    "orbax",
    "tensorboardX",
    "tensorflow_datasets",
    "fer_jax.train",
    "fer_jax.baseline",
    "fer_jax.eval",
    "fer_jax.data.fer2013",
)
"""Packages and fer_jax modules a `fer-jax predict` on a photo must not import."""


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The photo the cold-start benchmark times: scikit-image's astronaut as a 640x480 JPEG, a webcam frame's size."""
    from experiments.cold_start import photo_640x480

    return photo_640x480(tmp_path_factory.mktemp("photo"))


def predict_in_a_fresh_process(
    photo: Path, out: Path, compile_cache: str, cache_root: Path | None = None
) -> tuple[list[str], list[dict]]:
    """`fer-jax predict PHOTO` in a new interpreter with $FER_JAX_COMPILE_CACHE=`compile_cache` (and no test-session
    cache of JAX's; $FER_JAX_CACHE=`cache_root` if given); returns the watched modules it imported and its faces."""
    script = (
        "import sys\n"
        "from fer_jax.cli import main\n"
        f"code = main(['predict', {str(photo)!r}, '--out', {str(out)!r}])\n"
        f"watched = {NOT_ON_THE_PREDICT_PATH!r}\n"
        "print('imported:', sorted(w for w in watched if any(m == w or m.startswith(w + '.') for m in sys.modules)))\n"
        "sys.exit(code)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["FER_JAX_COMPILE_CACHE"] = compile_cache
    if cache_root:
        env["FER_JAX_CACHE"] = str(cache_root)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    imported = json.loads(done.stdout.rsplit("imported: ", 1)[1].replace("'", '"'))
    (image,) = json.loads((out / "predictions.json").read_text())["images"]
    return imported, image["faces"]


def cache_entries(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_predict_imports_neither_torch_nor_the_trainer(photo, tmp_path):
    imported, faces = predict_in_a_fresh_process(photo, tmp_path / "out", "off", tmp_path / "root")
    assert imported == []
    assert [face["emotion"] for face in faces] == ["happy"]
    assert not (tmp_path / "root" / "jax-compile").exists()  # turned off: nothing written


@pytest.mark.slow
def test_a_second_process_loads_the_programs_and_a_damaged_cache_breaks_nothing(photo, tmp_path):
    cache = tmp_path / "cache"
    _, first = predict_in_a_fresh_process(photo, tmp_path / "first", str(cache))
    written = cache_entries(cache)
    (machine,) = {Path(name).parts[0] for name in written}
    assert machine.startswith("jaxlib") and any("jit_forward" in name for name in written)

    _, second = predict_in_a_fresh_process(photo, tmp_path / "second", str(cache))
    assert second == first
    assert cache_entries(cache) == written  # every program was found: nothing compiled, nothing written

    for number, name in enumerate(sorted(written)):  # truncated, garbage, empty: every entry damaged
        damaged = [written[name][: len(written[name]) // 2], os.urandom(len(written[name])), b""][number % 3]
        (cache / name).write_bytes(damaged)
    _, third = predict_in_a_fresh_process(photo, tmp_path / "third", str(cache))
    assert third == first


@pytest.mark.slow
def test_an_unusable_cache_folder_breaks_nothing(photo, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _, faces = predict_in_a_fresh_process(photo, tmp_path / "out", str(blocker))
    assert [face["emotion"] for face in faces] == ["happy"]


def test_the_cache_folder_is_per_machine_and_can_be_moved_or_turned_off(monkeypatch, tmp_path):
    from fer_jax.infer import compile_cache

    monkeypatch.setenv("FER_JAX_CACHE", str(tmp_path / "root"))
    monkeypatch.delenv(compile_cache.COMPILE_CACHE_ENV, raising=False)
    tag = compile_cache.machine_tag()
    assert compile_cache.compile_cache_dir() == tmp_path / "root" / "jax-compile" / tag
    monkeypatch.setenv(compile_cache.COMPILE_CACHE_ENV, str(tmp_path / "elsewhere"))
    assert compile_cache.compile_cache_dir() == tmp_path / "elsewhere" / tag
    for off in ("off", "0", "OFF"):
        monkeypatch.setenv(compile_cache.COMPILE_CACHE_ENV, off)
        assert compile_cache.compile_cache_dir() is None

    monkeypatch.setattr(compile_cache, "cpuinfo_field", lambda name: f"{name} of another CPU")
    assert compile_cache.machine_tag() != tag


def test_the_benchmark_reads_importtime_per_top_level_package_and_compares_faces():
    from experiments.cold_start import compare_faces, import_seconds

    stderr = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:    900000 |     900000 |     jax._src.core\n"
        "import time:    100000 |    1000000 |   jax\n"
        "import time:    250000 |     250000 |   cv2\n"
        "import time:     50000 |    1300000 | fer_jax.infer.predict\n"
        "warning: something else\n"
    )
    assert import_seconds(stderr) == {"jax": 1.0, "cv2": 0.25, "fer_jax": 0.05}

    face = {"box": {"x": 1, "y": 2, "width": 3, "height": 3}, "emotion": "happy", "probabilities": {"happy": 0.9}}
    moved = {**face, "probabilities": {"happy": 0.8999}}
    other = {**face, "box": {"x": 9, "y": 2, "width": 3, "height": 3}}
    compared = compare_faces({"a.png": [face], "b.png": [face], "c.png": []}, {"a.png": [moved], "b.png": [other]})
    assert compared == {
        "images": 3,
        "images_with_the_same_boxes": 2,
        "faces": 2,
        "faces_with_the_same_emotion": 1,
        "largest_probability_difference": pytest.approx(1e-4),
    }
