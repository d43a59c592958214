"""`fer_jax.infer.predict` and `fer-jax predict`: a photo, FER faces, odd images, bad files, video, shipped weights."""

import csv
import json
import shutil
import zipfile
from pathlib import Path

import cv2
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import torch

import fer_jax
from fer_jax.cli import main
from fer_jax.config import Config
from fer_jax.data.fer2013 import EMOTIONS, DataError, decode_face
from fer_jax.data.views import DEFAULT_TTA, uint8_views, view_list
from fer_jax.files import write_json
from fer_jax.infer import predict as predict_module
from fer_jax.infer.batch import probabilities
from fer_jax.infer.predict import (
    DEFAULT_WEIGHTS,
    Averaged,
    classifier_of,
    load_classifier,
    load_weights,
    shipped_weights,
)
from fer_jax.models.zoo import count_params
from fer_jax.train.checkpoints import RunCheckpoints
from fer_jax.train.loop import new_record
from fer_jax.train.steps import init_state

ROOT = Path(__file__).resolve().parent.parent
# Where the default detector (RetinaFace, framed like a FER crop) finds the astronaut's face (x, y, width, height),
# within a few pixels. dlib's box is (169, 64, 103, 103), Haar's (177, 67, 93, 93).
ASTRONAUT_FACE = (169, 55, 114, 114)


def assert_astronaut_face(box, scale=1.0, tolerance=8):
    expected = [v * scale for v in ASTRONAUT_FACE]
    assert all(abs(got - want) <= tolerance * scale for got, want in zip(box, expected)), (box, expected)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut (Eileen Collins, NASA; public domain): RGB uint8, 512x512, one smiling face."""
    return skimage.data.astronaut()


def private_test_faces(archive: Path, limit: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """PrivateTest faces straight from the Kaggle zip (uint8 (N, 48, 48), labels, member names), in name order."""
    with zipfile.ZipFile(archive) as zf:
        names = sorted(n for n in zf.namelist() if "/PrivateTest_" in n)[: limit or None]
        faces = torch.stack([decode_face(zf.read(n), n)[0] for n in names])
    labels = torch.tensor([EMOTIONS.index(n.split("/")[-2]) for n in names])
    return faces, labels, names


def test_predict_finds_the_astronauts_face(astronaut):
    faces = fer_jax.predict(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert_astronaut_face(face.box)
    assert list(face.probabilities) == list(EMOTIONS)
    assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert face.emotion == "happy"  # she smiles; the shipped CPU-best net says so


@pytest.mark.parametrize("kind", ["rgba", "16-bit", "gray", "huge"])
def test_any_image_mode_and_size(kind, astronaut, tmp_path):
    bgr = cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR)
    scale = 1.0
    if kind == "rgba":
        image, name = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), "rgba.png"
        image[..., 3] = 200
    elif kind == "16-bit":
        image, name = bgr.astype(np.uint16) * 257, "deep.png"
    elif kind == "gray":
        image, name = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), "gray.jpg"
    else:
        scale = 12.0  # 6144x6144, 38 megapixels
        image, name = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR), "huge.jpg"
    assert cv2.imwrite(str(tmp_path / name), image)
    faces = fer_jax.predict(tmp_path / name)
    assert len(faces) == 1
    assert_astronaut_face(faces[0].box, scale)


def test_arrays_of_any_layout(astronaut):
    rgb = fer_jax.predict(astronaut)[0]
    as_float = fer_jax.predict(torch.from_numpy(astronaut).float() / 255)[0]
    rgba = fer_jax.predict(np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)]))[0]
    assert as_float.box == rgba.box == rgb.box
    with pytest.raises(DataError, match="expected"):
        fer_jax.predict(np.zeros((4, 4, 5), np.uint8))


def test_cli_writes_annotated_image_json_and_csv(astronaut, tmp_path, capsys):
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 300, 3), 128, np.uint8))
    out = tmp_path / "out"
    assert main(["predict", str(photo), str(blank), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "astronaut.png: 1 face" in printed and "happy" in printed and "blank.png: no face found" in printed
    annotated = cv2.imread(str(out / "astronaut_annotated.jpg"))
    assert annotated.shape == (512, 512, 3)
    report = json.loads((out / "predictions.json").read_text())
    assert report["weights"]["sha256"] and report["detect"] is True
    first, second = report["images"]
    assert second["faces"] == [] and len(first["faces"]) == 1
    assert set(first["faces"][0]["probabilities"]) == set(EMOTIONS)
    with open(out / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["file"] == str(photo) and rows[0]["emotion"] == "happy"
    assert_astronaut_face([int(rows[0][k]) for k in ("x", "y", "width", "height")])
    assert sum(float(rows[0][e]) for e in EMOTIONS) == pytest.approx(1.0, abs=1e-3)


def test_unreadable_files_are_one_line_each_and_the_others_still_run(astronaut, tmp_path, capsys):
    photo = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    assert main(["predict", str(broken), str(tmp_path / "missing.png"), str(photo), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 3 and "Traceback" not in captured.err
    assert lines[0] == f"{broken}: not a readable image; skipped"
    assert lines[1] == f"{tmp_path / 'missing.png'}: no such file; skipped"
    assert lines[2].startswith("fer-jax predict: error: 2 of 3 images could not be read")
    assert "astronaut.jpg: 1 face" in captured.out and (out / "astronaut_annotated.jpg").is_file()
    assert [("error" in r) for r in json.loads((out / "predictions.json").read_text())["images"]] == [True, True, False]


def test_bad_inputs_give_a_result_or_one_line_and_never_stop_the_batch(astronaut, tmp_path, capsys, monkeypatch):
    with pytest.raises(DataError, match=r"image array of shape \(0, 0, 3\): the image is empty"):
        fer_jax.predict(np.zeros((0, 0, 3), np.uint8))
    assert fer_jax.predict(np.full((10_000, 10_000), 128, np.uint8)) == []  # 100 megapixels, no face
    photo, empty, odd = tmp_path / "astronaut.png", tmp_path / "empty.png", tmp_path / "odd.png"
    cv2.imwrite(str(photo), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    empty.write_bytes(b"")
    cv2.imwrite(str(odd), np.full((20, 30, 3), 7, np.uint8))
    detect_and_crop = predict_module.detect_and_crop

    def failing_on_odd(bgr, *args):  # a library error inside detection, on one image only
        if bgr.shape[:2] == (20, 30):
            raise cv2.error("OpenCV(4.14.0) color.cpp:199: error: (-215:Assertion failed) in function 'cvtColor'\n")
        return detect_and_crop(bgr, *args)

    monkeypatch.setattr(predict_module, "detect_and_crop", failing_on_odd)
    assert main(["predict", str(empty), str(odd), str(photo), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 3 and "Traceback" not in captured.err
    assert lines[0] == f"{empty}: not a readable image; skipped"
    assert lines[1] == (
        f"{odd}: could not be processed (OpenCV(4.14.0) color.cpp:199: error: (-215:Assertion failed) in function "
        "'cvtColor'); skipped"
    )
    assert "astronaut.png: 1 face" in captured.out


def test_predict_without_inputs_is_one_line(capsys):
    assert main(["predict"]) == 2
    err = capsys.readouterr().err.strip()
    assert "nothing to do" in err and "\n" not in err


def test_video_frame_by_frame(astronaut, tmp_path, capsys):
    bgr = cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR)
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (512, 512))
    for frame in [bgr] * 4 + [np.full_like(bgr, 90)] * 2:  # the face, then two frames without one
        writer.write(frame)
    writer.release()
    out = tmp_path / "out"
    assert main(["predict", "--video", str(clip), "--every", "2", "--out", str(out)]) == 0
    assert "6 frames, 3 classified, 2 with a face" in capsys.readouterr().out
    annotated = cv2.VideoCapture(str(out / "clip_annotated.mp4"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    annotated.release()
    with open(out / "clip_frames.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["frame"], r["faces"]) for r in rows] == [("0", "1"), ("2", "1"), ("4", "0")]
    assert rows[0]["emotion"] == "happy" and rows[2]["emotion"] == ""
    assert_astronaut_face([int(rows[0][k]) for k in ("x", "y", "width", "height")])
    assert not list(out.glob(".*partial*"))


def test_unreadable_video_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"no video here")
    assert main(["predict", "--video", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"fer-jax predict: error: {bad}: not a readable video"


SHIPPED_PARAMETERS = {"seed_cnn": 2_345_607, "vgg_bn": 5_687_359}
"""The nets whose weights ship in fer_jax/weights/, and their parameter counts."""


def test_shipped_weights_are_chosen_by_model_name(capsys):
    assert shipped_weights("vgg_bn") == DEFAULT_WEIGHTS and shipped_weights("seed_cnn").name == "seed_cnn.msgpack"
    assert main(["predict", "--model", "nope", "photo.jpg"]) == 2
    assert (
        capsys.readouterr().err == "fer-jax predict: error: no shipped weights for 'nope' (shipped: seed_cnn, vgg_bn)\n"
    )


@pytest.mark.parametrize("name", SHIPPED_PARAMETERS)
def test_shipped_weights_are_float16_and_checked(name, tmp_path):
    path = shipped_weights(name)
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["model"] == name and info["parameters"] == SHIPPED_PARAMETERS[name] and info["dtype"] == "float16"
    assert path.stat().st_size < 2 * info["parameters"] + 100_000 and info["test_accuracy"] > 0.6
    corrupt = tmp_path / path.name
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    corrupt.write_bytes(bytes(data))
    shutil.copy(path.with_suffix(".json"), corrupt.with_suffix(".json"))
    with pytest.raises(DataError, match="sha256"):
        load_weights(corrupt)
    with pytest.raises(FileNotFoundError, match="export-weights"):
        load_weights(tmp_path / "nothing.msgpack")


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [[], ["model.name=vgg_bn", "model.width=0.125", "model.input_crop=40"]],
    ids=["seed_cnn", "vgg_bn/8 crop 40"],
)
def test_export_weights_from_a_run_folder(tiny_zip, tmp_path, capsys, overrides):
    config = Config().apply_overrides(overrides)
    config.data.source = str(tiny_zip)
    config.run_dir = str(tmp_path / "run")
    state, _ = init_state(config, 1)
    write_json(Path(config.run_dir) / "config.json", config.to_dict())
    checkpoints = RunCheckpoints(config.run_dir)
    checkpoints.save("best", 3, state, {**new_record(), "best_epoch": 3})
    checkpoints.close()
    out = tmp_path / "exported" / "model.msgpack"
    assert main(["export-weights", config.run_dir, "--out", str(out)]) == 0
    assert f"{count_params(state.params):,} parameters" in capsys.readouterr().out
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["model"] == config.model.name and info["width"] == config.model.width
    assert info["input_crop"] == config.model.input_crop
    assert info["best_epoch"] == 3 and info["source_run"] == config.run_dir and info["test_accuracy"] is None
    faces = torch.randint(0, 256, (5, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    exported = load_classifier(out)(jnp.asarray(faces))
    original = load_classifier(config.run_dir)(jnp.asarray(faces))
    assert jnp.abs(exported - original).max() < 5e-3


@pytest.mark.real_data
def test_no_detect_on_a_fer_face_is_what_the_model_sees_in_evaluation(fer2013_zip, tmp_path, capsys):
    faces, labels, names = private_test_faces(fer2013_zip, limit=1)
    path = tmp_path / Path(names[0]).name
    with zipfile.ZipFile(fer2013_zip) as zf:
        path.write_bytes(zf.read(names[0]))
    [face] = fer_jax.predict(path, detect=False)
    assert face.box == (0, 0, 48, 48)
    classifier = load_classifier()
    expected = (classifier(jnp.asarray(faces))[0] + classifier(jnp.asarray(faces)[..., ::-1])[0]) / 2  # flip TTA
    assert jnp.abs(jnp.array(list(face.probabilities.values())) - expected).max() < 1e-6
    out = tmp_path / "out"
    assert main(["predict", "--no-detect", str(path), "--out", str(out)]) == 0
    assert f"{path}: 1 face" in capsys.readouterr().out
    assert cv2.imread(str(out / f"{path.stem}_annotated.jpg")).shape[:2] == (288, 288)  # enlarged 6x to draw on
    assert json.loads((out / "predictions.json").read_text())["detect"] is False


def source_run(name: str) -> Path:
    """The local training run that the shipped weights of `name` were exported from (runs/ is not in git)."""
    return ROOT / json.loads(shipped_weights(name).with_suffix(".json").read_text())["source_run"]


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED_PARAMETERS)
def test_float16_weights_predict_like_the_checkpoint(fer2013_zip, name):
    if not (source_run(name) / "checkpoints" / "best").is_dir():
        pytest.skip(f"{source_run(name)} (a local training run) is absent")
    faces, _, _ = private_test_faces(fer2013_zip, limit=512)
    shipped = load_classifier(shipped_weights(name))(jnp.asarray(faces))
    checkpoint = load_classifier(source_run(name))(jnp.asarray(faces))
    assert (shipped.argmax(-1) == checkpoint.argmax(-1)).all()
    assert jnp.abs(shipped - checkpoint).max() < 5e-3  # measured on these 512 faces: 2.1e-3 for vgg_bn


@pytest.mark.real_data
@pytest.mark.slow
def test_shipped_weights_score_the_recorded_private_test_accuracy(fer2013_zip):
    faces, labels, _ = private_test_faces(fer2013_zip)
    classifier = load_classifier()
    predictions = jnp.concatenate(
        [classifier(jnp.asarray(faces[i : i + 512])).argmax(-1) for i in range(0, len(faces), 512)]
    )
    accuracy = int((predictions == jnp.asarray(labels)).sum()) / len(labels)
    assert accuracy == pytest.approx(classifier.info["test_accuracy"], abs=2 / len(labels))


def test_folders_and_glob_patterns(astronaut, tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "trip" / "day2").mkdir(parents=True)
    bgr = cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(photos / "a.png"), bgr)
    cv2.imwrite(str(photos / "trip" / "day2" / "b.jpg"), bgr)
    (photos / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    out = photos / "out"  # inside the folder read: its annotated images are not read back
    pattern = str(photos / "**" / "*.jpg")
    args = ["predict", str(photos), pattern, str(tmp_path / "empty"), str(tmp_path / "none*.png"), "--out", str(out)]
    assert main(args) == 2
    first = json.loads((out / "predictions.json").read_text())["images"]
    capsys.readouterr()
    assert main(args) == 2  # now the out folder holds annotated JPEGs, and they are still not read
    captured = capsys.readouterr()
    images = json.loads((out / "predictions.json").read_text())["images"]
    assert [r["file"] for r in images] == [
        str(photos / "a.png"),
        str(photos / "trip" / "day2" / "b.jpg"),
        str(photos / "trip" / "day2" / "b.jpg"),
        str(tmp_path / "empty"),
        str(tmp_path / "none*.png"),
    ]
    assert all(len(r["faces"]) == 1 for r in images[:3]) and images == first
    errors = captured.err.strip().splitlines()[-3:]
    assert errors[0] == f"{tmp_path / 'empty'}: a folder without image files; skipped"
    assert errors[1] == f"{tmp_path / 'none*.png'}: no file matches this pattern; skipped"
    assert errors[2].startswith("fer-jax predict: error: 2 of 5 images could not be read")


def test_a_damaged_jpeg_is_named_in_its_message(astronaut, tmp_path, capfd):
    whole = tmp_path / "whole.jpg"
    cv2.imwrite(str(whole), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    data = whole.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    header_only = tmp_path / "header.jpg"
    header_only.write_bytes(data[:600])
    out = tmp_path / "out"
    assert main(["predict", str(cut), str(header_only), "--out", str(out)]) == 2
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and "Traceback" not in err and ".cpp" not in err and "/__w/" not in err
    assert all(str(cut) in line or str(header_only) in line or "1 of 2 images" in line for line in lines), lines
    assert any(line.startswith(f"warning: {cut}: ") for line in lines)
    assert any(line.startswith(f"{header_only}: not a readable image") for line in lines)


def test_views_are_the_evaluations_and_stay_8_bit():
    faces = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 48, 48)), jnp.uint8)
    assert [len(view_list(tta)) for tta in ("none", "flip", "crops")] == [1, 2, 10]
    views = uint8_views("crops")(faces)
    assert views.shape == (10, 3, 48, 48) and views.dtype == jnp.uint8
    assert (views[0] == faces).all() and (views[1] == faces[..., ::-1]).all()
    mirrored = views[3][..., ::-1].astype(jnp.int16)  # the mirror's top-left crop: the top-right crop, mirrored
    assert jnp.abs(views[6].astype(jnp.int16) - mirrored).max() <= 1  # but for rounding
    with pytest.raises(DataError, match="unknown test-time views 'zoom'"):
        view_list("zoom")


def test_views_and_nets_are_averaged_in_fixed_batches():
    faces = jnp.asarray(np.random.default_rng(1).integers(0, 256, (3, 48, 48)), jnp.uint8)
    vgg, seed = load_classifier("vgg_bn"), load_classifier("seed_cnn")
    assert classifier_of(None, "none") is load_classifier(None) and DEFAULT_TTA == "flip"
    assert classifier_of(vgg) is vgg  # a loaded classifier is used as it is
    flipped = classifier_of("vgg_bn", "flip")(faces)
    assert jnp.abs(flipped - (vgg(faces) + vgg(faces[..., ::-1])) / 2).max() < 1e-6
    both = classifier_of(["vgg_bn", "seed_cnn"], "none")(faces)
    assert jnp.abs(both - (vgg(faces) + seed(faces)) / 2).max() < 1e-6
    seen = []

    def recording(batch):  # the real net, noting the shapes it is given
        seen.append(batch.shape[0])
        return vgg(batch)

    recording.info = vgg.info
    ensemble = Averaged([recording, seed], "crops")
    out = probabilities(ensemble, list(faces))  # 3 faces: one batch padded to 8, its 10 views in one call
    assert seen == [80] and len(out) == 3 and all(sum(p) == pytest.approx(1, abs=1e-5) for p in out)
    assert ensemble.info["views"] == 10 and [n["model"] for n in ensemble.info["nets"]] == ["vgg_bn", "seed_cnn"]


@pytest.mark.slow
def test_cli_ensembles_and_views(astronaut, tmp_path, capsys):
    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    assert main(["predict", str(path), "--model", "vgg_bn,seed_cnn", "--tta", "none", "--out", str(out)]) == 0
    weights = json.loads((out / "predictions.json").read_text())["weights"]
    assert weights["views"] == 1 and [n["model"] for n in weights["nets"]] == ["vgg_bn", "seed_cnn"]
    [face] = fer_jax.predict(astronaut, checkpoint=["vgg_bn", "seed_cnn"], tta="none")
    [record] = json.loads((out / "predictions.json").read_text())["images"][0]["faces"]
    assert record["probabilities"] == pytest.approx(face.probabilities, abs=1e-6)
    assert main(["predict", str(path), "--out", str(out)]) == 0  # the default: vgg_bn, flip, box crop
    report = json.loads((out / "predictions.json").read_text())
    weights = report["weights"]
    assert report["crop"] == "box"
    assert main(["predict", str(path), "--crop", "layout", "--tta", "none", "--out", str(tmp_path / "layout")]) == 0
    [warped] = fer_jax.predict(astronaut, tta="none", warp=True)
    layout = json.loads((tmp_path / "layout" / "predictions.json").read_text())
    assert layout["crop"] == "layout" and layout["images"][0]["faces"][0]["probabilities"] == pytest.approx(
        warped.probabilities, abs=1e-6
    )
    assert warped.probabilities != pytest.approx(fer_jax.predict(astronaut, tta="none")[0].probabilities, abs=1e-3)
    assert weights["tta"] == "flip" and weights["views"] == 2 and weights["model"] == "vgg_bn" and weights["sha256"]
    capsys.readouterr()
    with pytest.raises(SystemExit, match="2"):
        main(["predict", str(path), "--tta", "zoom"])
    assert "invalid choice: 'zoom'" in capsys.readouterr().err
    assert main(["predict", str(path), "--model", "vgg_bn,nope", "--out", str(out)]) == 2
    assert "no shipped weights for 'nope'" in capsys.readouterr().err
