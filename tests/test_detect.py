"""fer_jax.infer.detect (detectors, rotation sweep, upright crops), fer_jax.infer.batch, and the pipeline scenes."""

import json
import math
import sys

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from experiments.scenes import Scene, Truth, build_fer_scenes, build_wild_scenes
from experiments.scoring import evaluate_detector, match, score_curve
from fer_jax.cli import build_parser, main
from fer_jax.data.fer2013 import DataError
from fer_jax.infer import detect, retinaface
from fer_jax.infer.batch import BATCH_SIZE, BUCKETS, probabilities, stream
from fer_jax.infer.detect import Detection, crop, get_detector, haar_boxes, merge, retinaface_detections, sweep
from tests.fixtures import make_faces

ASTRONAUT_CENTRE = (222, 115)  # the middle of her face, marked by hand (experiments/scenes.py's PHOTOS)


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)


def centre(box):
    return box[0] + box[2] / 2, box[1] + box[3] / 2


@pytest.mark.slow
def test_sweep_finds_a_face_turned_by_90_degrees_maps_it_back_and_crops_it_upright(gray):
    turned = cv2.rotate(gray, cv2.ROTATE_90_CLOCKWISE)  # (x, y) -> (511 - y, x)
    assert get_detector("haar")(turned) == []  # the upright cascade alone misses it
    found = sweep(haar_boxes, turned, angles=(0.0, 90.0, -90.0), profiles=False)
    assert len(found) == 1 and found[0].rotation == 90.0
    x, y = ASTRONAUT_CENTRE
    assert math.dist(centre(found[0].box), (511 - y, x)) < 12
    (upright,) = get_detector("haar")(gray)
    same = np.corrcoef(crop(turned, found[0]).ravel(), crop(gray, upright).ravel())[0, 1]
    sideways = np.corrcoef(crop(turned, found[0], align=False).ravel(), crop(gray, upright).ravel())[0, 1]
    assert same > 0.8 > sideways + 0.4, (same, sideways)


@pytest.mark.slow
def test_cli_detector_option_records_the_rotation(gray, tmp_path, capsys):
    cv2.imwrite(
        str(tmp_path / "turned.png"), cv2.rotate(gray, cv2.ROTATE_90_COUNTERCLOCKWISE)
    )  # (x, y) -> (y, 511 - x)
    assert (
        main(["predict", "--detector", "dlib-sweep", "--out", str(tmp_path / "out"), str(tmp_path / "turned.png")]) == 0
    )
    assert "turned.png: 1 face" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "predictions.json").read_text())
    (face,) = report["images"][0]["faces"]
    box = face["box"]
    x, y = ASTRONAUT_CENTRE
    assert report["detector"] == "dlib-sweep" and face["rotation"] == -90.0
    assert math.dist(centre([box[k] for k in ("x", "y", "width", "height")]), (y, 511 - x)) < 15
    assert main(["predict", "--detector", "mtcnn", str(tmp_path / "turned.png")]) == 2
    assert capsys.readouterr().err.startswith("fer-jax predict: error: unknown detector 'mtcnn': choose one of")


def test_crop_turns_the_box_upright_and_leaves_upright_boxes_alone():
    image = np.zeros((200, 200), np.uint8)
    image[60:80, 70:130] = 255  # a bar across the top of a 100x100 "face" at (50, 50)
    upright = crop(image, Detection((50, 50, 100, 100)))
    assert upright.shape == (48, 48) and upright[6:13, 12:36].mean() > 200 and upright[20:].mean() < 5
    turned = cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)  # the bar now runs down the left side
    again = crop(turned, Detection((50, 50, 100, 100), rotation=-90.0))
    assert np.abs(again.astype(int) - upright).mean() < 8
    assert (
        np.abs(crop(turned, Detection((50, 50, 100, 100), rotation=-90.0), align=False).astype(int) - upright).mean()
        > 30
    )


def test_merge_keeps_the_first_of_overlapping_boxes_left_to_right():
    first, echo, other = (
        Detection((100, 100, 50, 50), 0.0),
        Detection((110, 105, 60, 60), 30.0),
        Detection((10, 0, 40, 40)),
    )
    assert merge([first, echo, other]) == [other, first]


def test_unknown_detector_and_missing_dlib_are_one_line(monkeypatch):
    with pytest.raises(DataError, match="unknown detector 'mtcnn': choose one of retinaface, retinaface-sweep, haar"):
        get_detector("mtcnn")
    detect._dlib_detector.cache_clear()
    monkeypatch.setitem(sys.modules, "dlib", None)
    try:
        with pytest.raises(DataError, match=r"a dependency of fer-jax: pip install dlib-bin=="):
            get_detector("dlib-sweep")
    finally:
        detect._dlib_detector.cache_clear()


def test_dlib_finds_the_astronaut_framed_like_a_fer_crop(gray):
    (face,) = get_detector("dlib")(gray)
    (haar,) = get_detector("haar")(gray)  # Haar's box frames faces as FER-2013's crops do
    assert math.dist(centre(face.box), centre(haar.box)) < 0.1 * haar.box[2]
    assert 0.9 < face.box[2] / haar.box[2] < 1.25


def test_dlib_finds_no_false_face_in_a_jpeg_of_the_astronaut(gray):
    ok, encoded = cv2.imencode(".jpg", gray)  # OpenCV's default quality, 95
    assert ok
    jpeg = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)
    (face,) = get_detector("dlib")(jpeg)  # at dlib's own threshold 0 a false face (score 0.006) appears at her knee
    assert math.dist(centre(face.box), ASTRONAUT_CENTRE) < 0.1 * face.box[2]


class Recording:
    """A stand-in classifier: records the batch shapes it sees; a face's 'probabilities' are its first pixel."""

    def __init__(self):
        self.shapes = []

    def __call__(self, faces):
        self.shapes.append(tuple(faces.shape))
        return faces[:, :1, 0].astype("float32")


def test_batches_have_fixed_shapes_and_results_keep_their_order():
    classifier = Recording()
    items = [
        (n, [np.full((48, 48), (n + i) % 256, np.uint8) for i in range(count)])
        for n, count in enumerate([0, 3, 200, 100, 1, 0, 300, 2])
    ]
    results = list(stream(items, classifier))
    assert [item for item, _ in results] == list(range(8))
    for (n, faces), (_, got) in zip(items, results):
        assert got == [[float((n + i) % 256)] for i in range(len(faces))]
    assert {shape[0] for shape in classifier.shapes} <= set(BUCKETS)
    assert sum(shape[0] == BATCH_SIZE for shape in classifier.shapes) >= 2
    assert probabilities(classifier, []) == []


@pytest.mark.slow
def test_scenes_keep_every_face_inside_and_matching_scores_them():
    faces = make_faces({"Training": 0, "PublicTest": 0, "PrivateTest": 6})
    images = torch.stack([f.pixels for f in faces])
    labels = torch.tensor([f.label for f in faces])
    counts = {"single": 2, "group": 1, "grid": 1, "rotated": 2, "small": 1, "jpeg": 1}
    scenes = build_fer_scenes(images, labels, 1, [], counts)
    again = build_fer_scenes(images, labels, 1, [], counts)
    assert [s.faces for s in scenes] == [s.faces for s in again]  # a fixed seed: the same scenes
    assert [s.kind for s in scenes] == ["single"] * 2 + ["group", "grid"] + ["rotated"] * 2 + ["small", "jpeg"]
    used = [t.index for s in scenes for t in s.faces]
    assert len(used) == len(set(used)) >= 16 + 4 + 3
    jpeg = scenes[-1].image
    assert (jpeg[..., 0] == jpeg[..., 1]).all() and (jpeg[..., 1] == jpeg[..., 2]).all()  # grayscale
    plain = build_fer_scenes(images, labels, 1, [], {**counts, "jpeg": 0})
    assert [s.faces for s in plain] == [s.faces for s in scenes[:-1]]  # the jpeg scenes come last
    for scene in scenes:
        height, width = scene.image.shape[:2]
        for t in scene.faces:
            assert t.side / 2 <= t.cx <= width - t.side / 2 and t.side / 2 <= t.cy <= height - t.side / 2
            assert t.label == labels[t.index]
    truths = scenes[2].faces
    exact = [(round(t.cx - t.side / 2), round(t.cy - t.side / 2), round(t.side), round(t.side)) for t in truths]
    assert match(truths, exact[::-1]) == list(range(len(truths)))[::-1]
    off = [(x + w, y, w, h) for x, y, w, h in exact]  # a face's width to the right: no match
    tiny = [(x + w // 2 - 2, y + h // 2 - 2, 4, 4) for x, y, w, h in exact]  # right place, far too small
    assert match(truths, off) == match(truths, tiny) == [None] * len(truths)


def test_the_wild_recipe_tilts_blends_and_compresses_its_faces():
    faces = make_faces({"Training": 0, "PublicTest": 0, "PrivateTest": 6})
    images = torch.stack([f.pixels for f in faces])
    labels = torch.tensor([f.label for f in faces])
    photo = cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2BGR)
    scenes = build_wild_scenes(images, labels, 1, [photo], count=4)
    assert [s.faces for s in scenes] == [s.faces for s in build_wild_scenes(images, labels, 1, [photo], count=4)]
    truths = [t for s in scenes for t in s.faces]
    assert {s.kind for s in scenes} == {"wild"} and all(s.image.shape == (600, 800, 3) for s in scenes)
    assert all(72 <= t.side <= 220 and abs(t.angle) <= 25 and t.label == labels[t.index] for t in truths)
    assert any(t.angle != 0 and t.angle % 15 for t in truths)  # tilts drawn from a range, not the 15-degree steps
    assert len({t.index for t in truths}) == len(truths)
    assert (scenes[0].image[..., 0] != scenes[0].image[..., 2]).any()  # a colour JPEG, not a gray one
    backdrop = cv2.resize(photo, (800, 600), interpolation=cv2.INTER_AREA).astype(int)
    for scene in scenes:  # the oval leaves the crop's corners (0.42 of its side out on each axis) to the photo
        for t in scene.faces:
            turn = math.radians(-t.angle)
            for dx, dy in ((-0.42, -0.42), (0.42, 0.42)):
                x = t.cx + t.side * (dx * math.cos(turn) - dy * math.sin(turn))
                y = t.cy + t.side * (dx * math.sin(turn) + dy * math.cos(turn))
                assert np.abs(scene.image[round(y), round(x)].astype(int) - backdrop[round(y), round(x)]).max() < 40


def test_evaluate_detector_scores_a_photo_and_a_face_free_image():
    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    x, y = ASTRONAUT_CENTRE
    face = Truth(x, y, 95, 0.0, "fer", label=3)  # scored as a labelled face: 'happy'
    scenes = [
        Scene("astronaut", "photo", astronaut, [face]),
        Scene("blank", "free", np.full((300, 400, 3), 128, np.uint8)),
    ]

    def always_happy(faces):
        return np.eye(7, dtype=np.float32)[[3] * len(faces)]

    result = evaluate_detector("haar", scenes, always_happy)
    assert result["recall"] == result["end_to_end_accuracy"] == result["accuracy_on_detected"] == 1.0
    assert result["boxes"] == 1 and result["false_boxes_per_face_free_image"] == 0 and result["missed"] == []
    assert result["pipeline_faces_per_s"] > 0


def test_score_curve_drops_the_boxes_under_each_threshold():
    truth = Truth(100, 100, 50, 0.0, "fer", label=0)
    face, elsewhere = Detection((75, 75, 50, 50), score=0.4), Detection((300, 300, 50, 50), score=0.08)
    scenes = [
        Scene("photo", "photo", None, [truth]),
        Scene("free", "free", None),
    ]
    curve = {row["threshold"]: row for row in score_curve(scenes, [[face, elsewhere], [elsewhere]])}
    assert curve[0.0] == {
        "threshold": 0.0,
        "recall": 1.0,
        "false_boxes_per_face_free_image": 1.0,
        "false_boxes_in_face_scenes": 1,
        "false_boxes_in_photos": 1,
        "false_boxes_per_face_scene": 1.0,
    }
    assert curve[0.1]["recall"] == 1.0 and curve[0.1]["false_boxes_in_face_scenes"] == 0
    assert curve[0.1]["false_boxes_per_face_free_image"] == 0.0
    assert curve[0.5]["recall"] == 0.0


# RetinaFace --------------------------------------------------------------------------------------------------


def test_retinaface_is_the_default_and_frames_the_astronaut_like_a_fer_crop(gray):
    assert build_parser().parse_args(["predict", "x.png"]).detector == detect.DEFAULT_DETECTOR == "retinaface"
    (face,) = get_detector("retinaface")(gray)
    (haar,) = get_detector("haar")(gray)  # Haar's box frames faces as FER-2013's crops do
    assert math.dist(centre(face.box), centre(haar.box)) < 0.15 * haar.box[2]
    assert 0.9 < face.box[2] / haar.box[2] < 1.35
    assert abs(face.rotation) < 5 and face.score > 0.99  # her head is nearly upright
    ok, encoded = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 30])
    assert ok and len(get_detector("retinaface")(cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE))) == 1


def test_retinaface_landmarks_and_the_eye_line_turn_a_tilted_face_upright(gray):
    (raw,) = retinaface.detect(gray, 0.5)
    left_eye, right_eye, nose, mouth_left, mouth_right = raw.landmarks
    x1, y1, x2, y2 = raw.box
    assert all(x1 < x < x2 and y1 < y < y2 for x, y in raw.landmarks)
    assert left_eye[0] < nose[0] < right_eye[0] and max(left_eye[1], right_eye[1]) < nose[1] < mouth_left[1]
    assert mouth_left[0] < mouth_right[0]
    matrix = cv2.getRotationMatrix2D(ASTRONAUT_CENTRE, -25, 1.0)  # her head turned 25 degrees clockwise
    tilted = cv2.warpAffine(gray, matrix, gray.shape[::-1], borderMode=cv2.BORDER_REPLICATE)
    (face,) = get_detector("retinaface")(tilted)
    (upright,) = get_detector("retinaface")(gray)
    assert abs(face.rotation - upright.rotation - 25) < 6, face.rotation
    same = np.corrcoef(crop(tilted, face).ravel(), crop(gray, upright).ravel())[0, 1]
    as_found = np.corrcoef(crop(tilted, face, align=False).ravel(), crop(gray, upright).ravel())[0, 1]
    assert same > 0.8 and same > as_found + 0.2, (same, as_found)  # her own 2.4-degree tilt stays in `upright`


def test_retinaface_on_an_enlarged_image_gives_boxes_in_the_input_pixels(gray):
    assert get_detector("retinaface")(gray) == retinaface_detections(gray, enlarge=detect.RETINAFACE_ENLARGE)
    (enlarged,) = retinaface_detections(gray, enlarge=1.5)
    (plain,) = retinaface_detections(gray)
    assert math.dist(centre(enlarged.box), centre(plain.box)) < 4
    assert abs(enlarged.box[2] / plain.box[2] - 1) < 0.05 and abs(enlarged.rotation - plain.rotation) < 2


def test_retinaface_sweep_finds_a_face_turned_by_90_degrees_and_small_faces(gray):
    turned = cv2.rotate(gray, cv2.ROTATE_90_CLOCKWISE)  # (x, y) -> (511 - y, x)
    (face,) = get_detector("retinaface-sweep")(turned)
    x, y = ASTRONAUT_CENTRE
    assert math.dist(centre(face.box), (511 - y, x)) < 15 and abs(face.rotation - 90) < 10
    small = cv2.resize(gray, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)  # her face about 30 px
    canvas = np.full((240, 320), 128, np.uint8)
    canvas[40:168, 100:228] = small
    (found,) = get_detector("retinaface-sweep")(canvas)
    assert math.dist(centre(found.box), (100 + x / 4, 40 + y / 4)) < 6


def test_retinaface_takes_any_size_and_refuses_an_altered_model(tmp_path):
    for shape in [(0, 0), (1, 1), (7, 3000), (33, 17), (101, 203)]:
        assert retinaface.detect(np.full(shape, 128, np.uint8), 0.5) == []
    height, width = 101, 203
    expected = [
        ((x + 0.5) * stride / width, (y + 0.5) * stride / height, side / width, side / height)
        for stride, sides in zip(retinaface.STRIDES, retinaface.ANCHOR_SIZES)
        for y in range(math.ceil(height / stride))
        for x in range(math.ceil(width / stride))
        for side in sides
    ]
    _, scores, _ = retinaface.session().run(
        None, {"input": retinaface.network_input(np.full((height, width), 128, np.uint8))}
    )
    assert retinaface.anchor_count(height, width) == len(expected) == scores.shape[1]
    found = [retinaface.anchor(i, height, width) for i in range(len(expected))]
    np.testing.assert_allclose(np.array(found), np.array(expected), rtol=1e-12)
    with pytest.raises(IndexError):
        retinaface.anchor(len(expected), height, width)
    altered = tmp_path / "model.onnx"
    altered.write_bytes(retinaface.WEIGHTS.read_bytes()[:-1] + b"\0")
    with pytest.raises(DataError, match=r"model.onnx: sha256 [0-9a-f]{16}\.\.\. is not the shipped model's"):
        retinaface.session(altered)
    with pytest.raises(DataError, match="no such file"):
        retinaface.session(tmp_path / "missing.onnx")


def test_layout_warp_undoes_a_similarity_transform():
    """A smooth 48x48 pattern enlarged 3x, turned 30 degrees and moved: its landmarks (FER_LAYOUT moved the same
    way) warp it back onto the 48x48 frame, within the blur of the two resamplings."""
    rng = np.random.default_rng(0)
    pattern = cv2.GaussianBlur(rng.integers(0, 256, (48, 48)).astype(np.uint8), (0, 0), 2)
    pattern = cv2.normalize(pattern, None, 0, 255, cv2.NORM_MINMAX)
    matrix = cv2.getRotationMatrix2D((24, 24), 30, 3.0)
    matrix[:, 2] += (120, 90)
    image = cv2.warpAffine(pattern, matrix, (320, 280), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    landmarks = [tuple(matrix @ (x, y, 1)) for x, y in detect.FER_LAYOUT]
    warped = detect.layout_warp(image, landmarks, detect.FER_LAYOUT)
    inner = (slice(6, 42), slice(6, 42))
    error = np.abs(warped[inner].astype(float) - pattern[inner].astype(float)).mean()
    assert warped.shape == (48, 48) and warped.dtype == np.uint8 and error < 2, error
    moved = detect.layout_warp(image, [(x + 9, y) for x, y in landmarks], detect.FER_LAYOUT)  # 3 px off in 48
    assert np.abs(moved[inner].astype(float) - pattern[inner].astype(float)).mean() > 10 * error


def test_retinaface_detections_carry_landmarks_and_warp_onto_the_fer_layout(gray):
    (upright,) = get_detector("retinaface")(gray)
    assert len(upright.landmarks) == 5 and all(
        upright.box[0] < x < upright.box[0] + upright.box[2] for x, _ in upright.landmarks
    )
    assert crop(gray, upright, warp=False).shape == crop(gray, upright, warp=True).shape == (48, 48)
    assert (crop(gray, upright, align=False, warp=True) == crop(gray, upright, align=False)).all()  # align gates it
    matrix = cv2.getRotationMatrix2D(ASTRONAUT_CENTRE, -25, 1.0)
    tilted = cv2.warpAffine(gray, matrix, gray.shape[::-1], borderMode=cv2.BORDER_REPLICATE)
    (face,) = get_detector("retinaface")(tilted)
    same = np.corrcoef(crop(tilted, face, warp=True).ravel(), crop(gray, upright, warp=True).ravel())[0, 1]
    assert same > 0.9, same  # the eye line, not the detector's 10-degree rule, turns it: both land on one layout
    assert not haar_boxes(gray) or get_detector("haar")(gray)[0].landmarks == ()
