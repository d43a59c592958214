"""The data check: it flags a blurred split, finds duplicates and copies across splits, and passes the real archive."""

import json

import pytest
import torch

from fer_jax.cli import main
from fer_jax.data.check import REPORT_FILE, check_dataset, check_source, sharpness
from fer_jax.data.fer2013 import load_fer2013
from tests.conftest import SMALL
from tests.fixtures import make_faces, write_zip


def blurred(pixels: torch.Tensor) -> torch.Tensor:
    x = pixels.float()[None, None]
    for _ in range(3):
        x = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    return x[0, 0].round().to(torch.uint8)


@pytest.fixture(scope="module")
def blurred_training_zip(tmp_path_factory):
    """The fixture faces with every Training face blurred, as in the archive shared before 2026-12-01."""
    faces = make_faces(SMALL)
    for face in faces:
        if face.split == "Training":
            face.pixels = blurred(face.pixels)
    return write_zip(faces, tmp_path_factory.mktemp("blurred") / "fer2013.zip")


def test_sharpness_drops_with_blur():
    face = make_faces(SMALL)[0].pixels
    assert sharpness(blurred(face)[None]) < 0.25 * sharpness(face[None])


def test_a_blurred_split_is_flagged(blurred_training_zip, tiny_zip, tmp_path):
    report = check_dataset(load_fer2013(blurred_training_zip, tmp_path / "cache"))
    assert any(w.startswith("Training: median sharpness") and "blurred" in w for w in report["warnings"])
    assert not any(w.startswith(("PublicTest", "PrivateTest")) for w in report["warnings"])
    assert check_dataset(load_fer2013(tiny_zip, tmp_path / "cache"))["warnings"] == []


def test_duplicates_within_and_across_splits(tmp_path):
    faces = make_faces(SMALL)
    training = [f for f in faces if f.split == "Training"]
    public = [f for f in faces if f.split == "PublicTest"]
    training[1].pixels = training[0].pixels.clone()  # a duplicate within Training, same label
    training[5].pixels = training[0].pixels.clone()  # ... and one with another label
    public[0].pixels = training[2].pixels.clone()  # an exact Training -> PublicTest copy
    public[1].pixels = (training[3].pixels.int() + 1).clamp(0, 255).to(torch.uint8)  # a near copy
    report = check_dataset(load_fer2013(write_zip(faces, tmp_path / "fer2013.zip"), tmp_path / "cache"))
    stats = report["splits"]["Training"]
    assert (
        stats["duplicate_images"],
        stats["duplicate_groups"],
        stats["duplicate_groups_with_conflicting_labels"],
    ) == (2, 1, 1)
    assert len(stats["duplicate_examples"][0]) == 3
    leak = report["cross_split_duplicates"]["Training->PublicTest"]
    assert leak["exact"] == 1 and leak["near"] == 2
    assert report["cross_split_duplicates"]["Training->PrivateTest"]["exact"] == 0


@pytest.mark.slow
def test_the_cli_writes_report_and_grids_and_strict_fails_on_warnings(blurred_training_zip, tmp_path, capsys):
    out = tmp_path / "check"
    assert (
        main(["data", "check", str(blurred_training_zip), "--out", str(out), "--json", str(tmp_path / "copy.json")])
        == 0
    )
    report = json.loads((out / REPORT_FILE).read_text())
    assert report == json.loads((tmp_path / "copy.json").read_text())
    assert report["warnings"] and "WARNING: Training: median sharpness" in capsys.readouterr().out
    assert {p.name for p in out.glob("samples_*.png")} == {
        "samples_Training.png",
        "samples_PublicTest.png",
        "samples_PrivateTest.png",
    }
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "check", str(blurred_training_zip), "--out", str(out), "--strict"])
    assert exit_info.value.code == 1


@pytest.mark.real_data
def test_the_shared_archive_passes(fer2013_zip, tmp_path):
    dataset = load_fer2013(fer2013_zip)
    report = check_source(dataset, None)
    assert report["warnings"] == []
    assert report["dataset_sha256"] and {s["count"] for s in report["splits"].values()} == {28709, 3589}
    for stats in report["splits"].values():  # reported, whatever they are
        assert isinstance(stats["duplicate_images"], int) and isinstance(stats["blank_images"], int)
    assert set(report["cross_split_duplicates"]) == {
        "Training->PublicTest",
        "Training->PrivateTest",
        "PublicTest->PrivateTest",
    }
