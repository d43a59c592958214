"""End-to-end benchmark of `fer-jax predict`: face detection + classification on scenes nobody tuned for.

    python -m experiments.pipeline --data ../shared/datasets/fer2013.zip --out results/pipeline_cpu.json
    python -m experiments.pipeline --data ../shared/datasets/fer2013.zip --split PublicTest --out /tmp/tune.json

Scenes are built, with a fixed seed, from the faces of one split (PrivateTest,
the scored one; tune detector settings with `--split PublicTest` or
`Training`, never on PrivateTest): each 48x48 face is upscaled (bicubic) and
pasted with feathered edges into a larger image over a face-free photo or a
synthetic background. Kinds of scene:

- single: one face of 64-256 px on a 640x480 image;
- group: 3-6 faces of 40-160 px on 1024x768;
- grid: a 4x4 contact sheet of 72-96 px faces;
- rotated: 1-3 faces of 72-160 px turned by +-15, 30, 45 or 90 degrees;
- small: 4 faces of 24-40 px on 640x480;
- jpeg: 3-6 faces of 40-160 px on 1024x768, saved as a grayscale JPEG of quality 30, 50 or 75.

Besides those labelled faces: the real photos of people that ship inside
dependencies (skimage's astronaut and camera, matplotlib's grace_hopper.jpg),
each as it is, turned by +-30 and +-90 degrees, at half size and as grayscale
JPEGs of quality 30, 50 and 75, with hand-marked face boxes; and groups of
skimage.data.lfw_subset()'s 100 real face crops. Face-free images
(skimage/matplotlib photos, lfw_subset's 100 non-face patches as a grid, noise
and gradients; each photo also as a grayscale JPEG) count false boxes.

A detection matches a face when its centre is within half the face's side of
the face's centre and its size is within 0.5-2x (one detection per face).
Per detector: recall (all faces, and per kind, size, angle and source), false
boxes per face scene and per face-free image, end-to-end accuracy on the labelled faces (a miss
counts as wrong), accuracy on the detected ones (with and without turning
rotated crops upright), seconds per image for detection and for the whole pipeline (detection, crops and
classification); for the dlib and RetinaFace detectors also recall and
false boxes at higher score thresholds (`by_score_threshold`). Plus the
classifier's faces/s in fixed batches of 256 and its accuracy on the split's
original crops: JAX, and ONNX Runtime float32 and int8 (calibrated on 512
Training faces) when the [onnx] extra is installed; and the whole pipeline's faces/s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import torch

SCENE_SEED = {"PrivateTest": 2013, "PublicTest": 7, "Training": 11}
"""Seeds of the scene layouts per split, so the scored scenes are fixed and differ from the tuning ones."""
COUNTS = {"single": 60, "group": 24, "grid": 4, "rotated": 36, "small": 10, "jpeg": 20}
"""Scenes of each kind built from the split's faces."""
JPEG_QUALITIES = (30, 50, 75)
"""Qualities of the grayscale JPEG copies (`jpeg` scenes, photos, face-free images), in turn: what a phone,
a messenger or a video frame hands `fer-jax predict`, where a detector meets block artefacts."""
SCORE_THRESHOLDS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Scores a dlib or RetinaFace detection must reach, for the detection-only curve `by_score_threshold` (for tuning
`fer_jax.infer.detect.DLIB_THRESHOLD` and `RETINAFACE_THRESHOLD` on PublicTest scenes; the detector's own threshold
is the curve's floor)."""
ANGLES = (-90, -45, -30, -15, 15, 30, 45, 90)
PHOTOS = {
    # name: (loader, face centre x, y, side) marked by hand on the original image.
    "astronaut": (lambda: cv2.cvtColor(_skimage().astronaut(), cv2.COLOR_RGB2BGR), 222, 115, 95),
    "camera": (lambda: cv2.cvtColor(_skimage().camera(), cv2.COLOR_GRAY2BGR), 212, 145, 85),
    "grace_hopper": (lambda: cv2.imread(str(_matplotlib_sample("grace_hopper.jpg"))), 260, 235, 190),
}
FACE_FREE = (
    "coffee",
    "chelsea",
    "rocket",
    "brick",
    "grass",
    "gravel",
    "text",
    "page",
    "moon",
    "horse",
    "hubble_deep_field",
    "coins",
    "retina",
    "immunohistochemistry",
    "logo",
    "clock",
)
"""skimage.data images with no human face (chelsea is a cat)."""
CLASSIFIER_BATCH = 256


@dataclass
class Truth:
    """A face placed in a scene: centre, side (before rotation), rotation of the face, where it came from."""

    cx: float
    cy: float
    side: float
    angle: float
    source: str  # "fer", "lfw" or a photo's name
    label: int | None = None  # the FER-2013 label, for "fer" faces
    index: int | None = None  # the face's index in the split


@dataclass
class Scene:
    name: str
    kind: str
    image: Any  # 8-bit BGR
    faces: list[Truth] = field(default_factory=list)


# Scenes --------------------------------------------------------------------------------------------------------


def _skimage() -> Any:
    import skimage.data

    return skimage.data


def _matplotlib_sample(name: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / name


def gray_to_bgr(tensor: torch.Tensor) -> Any:
    return cv2.cvtColor(tensor.contiguous().numpy(), cv2.COLOR_GRAY2BGR)


def background(rng: random.Random, width: int, height: int, photos: Sequence[Any]) -> Any:
    """A face-free photo cropped/resized to the size, a gradient, or smooth noise."""
    choice = rng.random()
    if choice < 0.6 and photos:
        photo = photos[rng.randrange(len(photos))]
        return cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    if choice < 0.8 or not photos and choice < 0.9:
        start, end = torch.randint(0, 256, (2, 3), generator=generator).float()
        ramp = torch.linspace(0, 1, width)[None, :, None]
        image = (start + (end - start) * ramp).expand(height, width, 3)
    else:
        coarse = torch.randint(0, 256, (height // 32 + 1, width // 32 + 1, 3), generator=generator).to(torch.uint8)
        image = torch.from_numpy(cv2.resize(coarse.numpy(), (width, height), interpolation=cv2.INTER_CUBIC)).float()
    return image.round().clamp(0, 255).to(torch.uint8).contiguous().numpy()


def paste(canvas: Any, face: Any, cx: float, cy: float, side: int, angle: float) -> None:
    """Paste a square face (gray or BGR) scaled to `side` px and turned by `angle` degrees, edges feathered."""
    face = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC if side > face.shape[0] else cv2.INTER_AREA)
    if face.ndim == 2:
        face = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
    ramp = max(1, side // 16)
    mask = torch.ones(side, side)
    edge = torch.linspace(0, 1, ramp + 2)[1:-1]
    mask[:ramp] *= edge[:, None]
    mask[-ramp:] *= edge.flip(0)[:, None]
    mask[:, :ramp] *= edge[None, :]
    mask[:, -ramp:] *= edge.flip(0)[None, :]
    reach = math.ceil(side * (abs(math.cos(math.radians(angle))) + abs(math.sin(math.radians(angle)))) / 2) + 1
    left, top = max(0, math.floor(cx) - reach), max(0, math.floor(cy) - reach)
    right, bottom = min(canvas.shape[1], math.floor(cx) + reach), min(canvas.shape[0], math.floor(cy) + reach)
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
    matrix[0, 2] += cx - side / 2 - left
    matrix[1, 2] += cy - side / 2 - top
    size = (right - left, bottom - top)
    warped = torch.from_numpy(cv2.warpAffine(face, matrix, size, flags=cv2.INTER_LINEAR)).float()
    alpha = torch.from_numpy(cv2.warpAffine(mask.numpy(), matrix, size, flags=cv2.INTER_LINEAR))[..., None]
    region = canvas[top:bottom, left:right]
    region[...] = (
        (torch.from_numpy(region).float() * (1 - alpha) + warped * alpha).round().clamp(0, 255).to(torch.uint8).numpy()
    )


def place(
    rng: random.Random,
    width: int,
    height: int,
    sides: Sequence[int],
    taken: list[tuple[float, float, float]],
    angle: float = 0.0,
) -> tuple[float, float] | None:
    """A centre where a face of this side (its rotated extent) fits inside the image without touching others."""
    side = sides[-1]
    reach = side * (abs(math.cos(math.radians(angle))) + abs(math.sin(math.radians(angle)))) / 2 + 2
    for _ in range(200):
        cx, cy = rng.uniform(reach, width - reach), rng.uniform(reach, height - reach)
        if all(math.dist((cx, cy), (x, y)) > (reach + r) * 1.05 for x, y, r in taken):
            taken.append((cx, cy, reach))
            return cx, cy
    return None


def build_fer_scenes(
    images: torch.Tensor, labels: torch.Tensor, seed: int, photos: Sequence[Any], counts: dict[str, int] = COUNTS
) -> list[Scene]:
    """The labelled scenes: the split's faces in the layouts of COUNTS, each face used at most once."""
    rng = random.Random(seed)
    order = list(range(len(images)))
    rng.shuffle(order)
    next_face = iter(order)
    scenes = []

    def add(scene: Scene, cx: float, cy: float, side: int, angle: float) -> None:
        index = next(next_face)
        paste(scene.image, images[index].numpy(), cx, cy, side, angle)
        scene.faces.append(Truth(cx, cy, side, angle, "fer", int(labels[index]), index))

    for kind, count in counts.items():
        for number in range(count):
            width, height = (1024, 768) if kind in ("group", "grid", "jpeg") else (640, 480)
            scene = Scene(f"{kind}_{number:03d}", kind, background(rng, width, height, photos))
            taken: list[tuple[float, float, float]] = []
            if kind == "grid":
                side = rng.randint(72, 96)
                gap = side // 6
                left, top = (width - 4 * side - 3 * gap) / 2, (height - 4 * side - 3 * gap) / 2
                for row in range(4):
                    for col in range(4):
                        add(scene, left + col * (side + gap) + side / 2, top + row * (side + gap) + side / 2, side, 0.0)
            else:
                faces, sizes, angle_choices = {
                    "single": (1, (64, 256), (0,)),
                    "group": (rng.randint(3, 6), (40, 160), (0,)),
                    "jpeg": (rng.randint(3, 6), (40, 160), (0,)),
                    "rotated": (rng.randint(1, 3), (72, 160), ANGLES),
                    "small": (4, (24, 40), (0,)),
                }[kind]
                for _ in range(faces):
                    side, angle = rng.randint(*sizes), float(rng.choice(angle_choices))
                    spot = place(rng, width, height, [side], taken, angle)
                    if spot:
                        add(scene, *spot, side, angle)
            if kind == "jpeg":
                scene.image = gray_jpeg(scene.image, JPEG_QUALITIES[number % len(JPEG_QUALITIES)])
            scenes.append(scene)
    return scenes


def gray_jpeg(image: Any, quality: int) -> Any:
    """An image as a grayscale JPEG of this quality would decode (BGR again)."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    ok, encoded = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a JPEG of quality {quality}")
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR)


def turn(image: Any, truth: Truth, angle: float) -> tuple[Any, Truth]:
    """An image turned by `angle` degrees on a canvas that holds all of it, and where its face went."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_width, new_height = round(height * sin + width * cos), round(height * cos + width * sin)
    matrix[0, 2] += new_width / 2 - width / 2
    matrix[1, 2] += new_height / 2 - height / 2
    out = cv2.warpAffine(image, matrix, (new_width, new_height), borderMode=cv2.BORDER_REPLICATE)
    cx = matrix[0, 0] * truth.cx + matrix[0, 1] * truth.cy + matrix[0, 2]
    cy = matrix[1, 0] * truth.cx + matrix[1, 1] * truth.cy + matrix[1, 2]
    return out, Truth(float(cx), float(cy), truth.side, float(angle), truth.source)


def build_photo_scenes(seed: int, photos: Sequence[Any]) -> list[Scene]:
    """Real photos of people (as they are, turned, half size) and groups of lfw_subset's real faces."""
    scenes = []
    for name, (load, cx, cy, side) in PHOTOS.items():
        image, truth = load(), Truth(cx, cy, side, 0.0, name)
        scenes.append(Scene(f"photo_{name}", "photo", image, [truth]))
        for angle in (30, -30, 90, -90):
            turned, moved = turn(image, truth, angle)
            scenes.append(Scene(f"photo_{name}_rot{angle:+d}", "photo", turned, [moved]))
        half = cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        scenes.append(Scene(f"photo_{name}_half", "photo", half, [Truth(cx / 2, cy / 2, side / 2, 0.0, name)]))
        for quality in JPEG_QUALITIES:
            scenes.append(Scene(f"photo_{name}_jpeg{quality}", "photo", gray_jpeg(image, quality), [truth]))
    rng = random.Random(seed + 1)
    lfw = (torch.from_numpy(_skimage().lfw_subset()[:100]) * 255).round().to(torch.uint8)
    for number in range(20):
        scene = Scene(f"lfw_{number:03d}", "lfw", background(rng, 1024, 768, photos))
        taken: list[tuple[float, float, float]] = []
        for index in range(number * 5, number * 5 + 5):
            side = rng.randint(64, 160)
            spot = place(rng, 1024, 768, [side], taken)
            if spot:
                paste(scene.image, lfw[index].numpy(), *spot, side, 0.0)
                scene.faces.append(Truth(*spot, side, 0.0, "lfw", index=index))
        scenes.append(scene)
    return scenes


def build_face_free(seed: int, photos: dict[str, Any]) -> list[Scene]:
    """Images with no face: the photos (and grayscale JPEG copies), lfw_subset's non-face patches as a 10x10
    grid, noise, gradients."""
    scenes = [Scene(f"free_{name}", "free", image) for name, image in photos.items()]
    scenes += [
        Scene(f"free_{name}_jpeg{quality}", "free", gray_jpeg(image, quality))
        for number, (name, image) in enumerate(photos.items())
        for quality in [JPEG_QUALITIES[number % len(JPEG_QUALITIES)]]
    ]
    patches = (torch.from_numpy(_skimage().lfw_subset()[100:]) * 255).round().to(torch.uint8)
    tiles = torch.nn.functional.interpolate(patches[:, None].float(), size=(75, 75), mode="bilinear")[:, 0]
    grid = tiles.reshape(10, 10, 75, 75).permute(0, 2, 1, 3).reshape(750, 750).round().clamp(0, 255).to(torch.uint8)
    scenes.append(Scene("free_lfw_nonfaces", "free", gray_to_bgr(grid)))
    rng = random.Random(seed + 2)
    for number in range(4):
        scenes.append(Scene(f"free_synthetic_{number}", "free", background(rng, 800, 600, [])))
    return scenes


def face_free_photos() -> dict[str, Any]:
    from fer_jax.infer.predict import to_bgr

    data = _skimage()
    photos = {}
    for name in FACE_FREE:
        image = getattr(data, name)()
        photos[name] = to_bgr(image.astype("uint8") * 255 if image.dtype == bool else image)
    photos["minduka"] = cv2.imread(str(_matplotlib_sample("Minduka_Present_Blue_Pack.png")))
    return photos


# Scoring -------------------------------------------------------------------------------------------------------


def match(truths: Sequence[Truth], boxes: Sequence[tuple[int, int, int, int]]) -> list[int | None]:
    """For each face, the index of its detection (centre within half its side, size 0.5-2x) or None."""
    pairs = []
    for t, truth in enumerate(truths):
        for d, (x, y, width, height) in enumerate(boxes):
            distance = math.dist((truth.cx, truth.cy), (x + width / 2, y + height / 2))
            if distance < truth.side / 2 and 0.5 <= width / truth.side <= 2:
                pairs.append((distance, t, d))
    found: list[int | None] = [None] * len(truths)
    used = set()
    for _, t, d in sorted(pairs):
        if found[t] is None and d not in used:
            found[t], used = d, used | {d}
    return found


def size_bin(side: float) -> str:
    return next(f"<{limit}px" for limit in (32, 48, 64, 96, 128, 10**9) if side < limit).replace(
        "<1000000000px", ">=128px"
    )


def evaluate_detector(name: str, scenes: Sequence[Scene], classifier: Any) -> dict[str, Any]:
    """Run one detector over every scene and score detection and classification."""
    from fer_jax.infer.detect import crop, get_detector

    detector = get_detector(name)
    detect_seconds, detect_cpu, records, crops, crops_plain, labels, labelled_crop = 0.0, 0.0, [], [], [], [], []
    detections_per_scene, vga_seconds = [], []
    false_boxes_free, false_boxes_faces, free_images, crop_seconds, crop_cpu = 0, 0, 0, 0.0, 0.0
    for scene in scenes:
        gray = cv2.cvtColor(scene.image, cv2.COLOR_BGR2GRAY)
        start, cpu_start = time.perf_counter(), time.process_time()
        detections = detector(gray)
        detect_seconds += time.perf_counter() - start
        if gray.shape == (480, 640):
            vga_seconds.append(time.perf_counter() - start)
        detect_cpu += time.process_time() - cpu_start
        detections_per_scene.append(detections)
        found = match(scene.faces, [d.box for d in detections])
        start, cpu_start = time.perf_counter(), time.process_time()
        first = len(crops)
        crops += [crop(gray, d) for d in detections]  # every box is classified, as `fer-jax predict` would
        crop_seconds += time.perf_counter() - start
        crop_cpu += time.process_time() - cpu_start
        if scene.kind == "free":
            free_images += 1
            false_boxes_free += len(detections)
        else:
            false_boxes_faces += len(detections) - sum(f is not None for f in found)
        for truth, which in zip(scene.faces, found):
            record = {
                "scene": scene.name,
                "kind": scene.kind,
                "source": truth.source,
                "side": round(truth.side),
                "angle": truth.angle,
                "found": which is not None,
                "index": truth.index,
            }
            if truth.label is not None and which is not None:
                record["crop"] = len(labels)
                labelled_crop.append(first + which)
                crops_plain.append(crop(gray, detections[which], align=False))
                labels.append(truth.label)
                record["rotation_found"] = detections[which].rotation
            records.append(record)
    start, cpu_start = time.perf_counter(), time.process_time()
    predicted_all = classify(classifier, crops)
    classify_seconds, classify_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    predicted = [predicted_all[i] for i in labelled_crop]
    predicted_plain = classify(classifier, crops_plain)
    for record in records:
        if "crop" in record:
            record["correct"] = predicted[record["crop"]] == labels[record["crop"]]
            record["correct_unaligned"] = predicted_plain[record["crop"]] == labels[record["crop"]]
    labelled = [r for r in records if r["source"] == "fer"]
    detected = [r for r in labelled if r["found"]]
    rotated = [r for r in detected if r["angle"] != 0]
    images = sum(scene.kind != "free" for scene in scenes) + free_images
    faces_found = sum(r["found"] for r in records)
    curve = (
        {"by_score_threshold": score_curve(scenes, detections_per_scene)}
        if name.startswith(("dlib", "retinaface"))
        else {}
    )
    return {
        "detector": name,
        "recall": _mean(r["found"] for r in records),
        "recall_fer": _mean(r["found"] for r in labelled),
        "faces": len(records),
        "faces_found": faces_found,
        "false_boxes_per_face_free_image": false_boxes_free / max(1, free_images),
        "false_boxes_in_face_scenes": false_boxes_faces,
        "false_boxes_per_face_scene": false_boxes_faces / max(1, images - free_images),
        "end_to_end_accuracy": sum(r.get("correct", False) for r in labelled) / len(labelled),
        "accuracy_on_detected": _mean(r["correct"] for r in detected),
        "accuracy_on_detected_unaligned": _mean(r["correct_unaligned"] for r in detected),
        "accuracy_on_detected_rotated": _mean(r["correct"] for r in rotated),
        "accuracy_on_detected_rotated_unaligned": _mean(r["correct_unaligned"] for r in rotated),
        "boxes": len(crops),
        "detect_ms_per_image": 1000 * detect_seconds / images,
        "detect_ms_per_640x480_image": 1000 * _mean(vga_seconds) if vga_seconds else None,
        "detect_cpu_ms_per_image": 1000 * detect_cpu / images,
        "classify_seconds": classify_seconds,
        "crop_seconds": crop_seconds,
        "pipeline_ms_per_image": 1000 * (detect_seconds + crop_seconds + classify_seconds) / images,
        "pipeline_faces_per_s": len(crops) / (detect_seconds + crop_seconds + classify_seconds) if crops else None,
        "pipeline_faces_per_cpu_s": len(crops) / (detect_cpu + crop_cpu + classify_cpu) if crops else None,
        "recall_by": {key: _recall_by(records, key) for key in ("kind", "source", "size", "angle")},
        "missed": [
            {k: r[k] for k in ("scene", "kind", "source", "side", "angle", "index")} for r in records if not r["found"]
        ],
        **curve,
    }


def score_curve(scenes: Sequence[Scene], detections_per_scene: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Detection figures had the detector kept only the boxes scoring at least each of SCORE_THRESHOLDS (exact
    for a single pass, which merges boxes best score first; close for a sweep, which merges upright first)."""
    rows = []
    for threshold in SCORE_THRESHOLDS:
        count = dict.fromkeys(("faces", "found", "free_images", "free_boxes", "false_in_faces", "false_in_photos"), 0)
        for scene, detections in zip(scenes, detections_per_scene):
            kept = [d.box for d in detections if d.score >= threshold]
            if scene.kind == "free":
                count["free_images"] += 1
                count["free_boxes"] += len(kept)
                continue
            matched = sum(m is not None for m in match(scene.faces, kept))
            count["faces"] += len(scene.faces)
            count["found"] += matched
            count["false_in_faces"] += len(kept) - matched
            count["false_in_photos"] += (len(kept) - matched) * (scene.kind == "photo")
        rows.append(
            {
                "threshold": threshold,
                "recall": count["found"] / max(1, count["faces"]),
                "false_boxes_per_face_free_image": count["free_boxes"] / max(1, count["free_images"]),
                "false_boxes_in_face_scenes": count["false_in_faces"],
                "false_boxes_in_photos": count["false_in_photos"],
            }
        )
    return rows


def _mean(values: Any) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _recall_by(records: Sequence[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[bool]] = {}
    for r in records:
        group = size_bin(r["side"]) if key == "size" else str(r[key])
        groups.setdefault(group, []).append(r["found"])
    return {g: {"faces": len(v), "recall": sum(v) / len(v)} for g, v in sorted(groups.items())}


def classify(classifier: Any, crops: Sequence[Any]) -> list[int]:
    """Labels of 48x48 crops, in fixed batches (`fer_jax.infer.batch`)."""
    from fer_jax.infer.batch import probabilities

    return [max(range(len(p)), key=p.__getitem__) for p in probabilities(classifier, crops)]


def faces_per_second(run: Any, batch: Any, seconds: float = 5.0) -> dict[str, float]:
    """Faces/s of `run(batch)` after a warm-up call, repeated for about `seconds`: per wall-clock second, and
    per CPU second of this process (all its threads; less sensitive to other programs on a shared machine)."""
    run(batch)
    calls, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        run(batch)
        calls += 1
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"faces_per_s": calls * len(batch) / wall, "faces_per_cpu_s": calls * len(batch) / cpu}


def onnx_classifiers(checkpoint: str | None, calibration: Any) -> tuple[dict[str, Any], str | None]:
    """The classifier's weights exported once and run by ONNX Runtime: float32 ("onnx") and that export
    quantized to int8 ("onnx_int8", calibrated on `calibration`, Training faces); ({}, the error) when the
    [onnx] extra is missing. The sessions hold their models, so the files go with the temporary folder."""
    from fer_jax.data.fer2013 import DataError
    from fer_jax.infer.onnx_export import OnnxClassifier, export_onnx, quantize_int8

    with tempfile.TemporaryDirectory() as folder:
        try:
            fp32 = export_onnx(Path(folder) / "model.onnx", checkpoint)["onnx"]
            int8 = quantize_int8(fp32, Path(folder) / "model-int8.onnx", calibration)
            return {"onnx": OnnxClassifier(fp32), "onnx_int8": OnnxClassifier(int8)}, None
        except DataError as err:
            return {}, str(err)


def classifier_speed(backends: dict[str, Any]) -> dict[str, Any]:
    """The classifier alone: faces/s of each backend (name -> classifier) in batches of 256 random faces."""
    import jax
    import jax.numpy as jnp

    faces = jnp.asarray(torch.randint(0, 256, (CLASSIFIER_BATCH, 48, 48), dtype=torch.uint8))
    return {
        "batch": CLASSIFIER_BATCH,
        **{
            name: faces_per_second(lambda b, run=classifier: jax.block_until_ready(run(b)), faces)
            for name, classifier in backends.items()
        },
    }


# Main ----------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from fer_jax.infer.detect import DETECTORS

    parser = argparse.ArgumentParser(prog="python -m experiments.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the FER-2013 archive (Kaggle zip, folder or CSV)")
    parser.add_argument(
        "--split",
        default="PrivateTest",
        choices=tuple(SCENE_SEED),
        help="faces to build the scenes from (default: %(default)s, the scored split; tune on the others)",
    )
    parser.add_argument(
        "--detectors",
        nargs="+",
        default=list(DETECTORS),
        choices=tuple(DETECTORS),
        metavar="NAME",
        help=f"detectors to compare (default: all of {', '.join(DETECTORS)})",
    )
    parser.add_argument(
        "--checkpoint", help="weights for the classifier (default: `fer-jax predict`'s shipped weights)"
    )
    parser.add_argument(
        "--out",
        required=True,
        help="the results JSON; a Markdown table is written beside (.md). "
        "Results of other detectors already in it (same split, archive and weights) are kept, so the "
        "detectors can be run one at a time",
    )
    parser.add_argument("--save-scenes", metavar="DIR", help="also write the scenes as JPEGs (never commit them)")
    return parser


def format_table(report: dict[str, Any]) -> str:
    """The per-detector table (Markdown): recall, false boxes, accuracy, seconds per image."""
    header = (
        "| detector | recall | recall (FER faces) | false boxes / face scene | false boxes / face-free image | "
        "end-to-end accuracy | accuracy on detected | detection s / image | detection s / 640x480 image | "
        "pipeline s / image | CPU ms / image (detection) | pipeline faces/s |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    rows = [
        f"| {r['detector']} | {r['recall']:.3f} | {r['recall_fer']:.3f} | "
        f"{_fmt(r.get('false_boxes_per_face_scene'))} | {r['false_boxes_per_face_free_image']:.2f} | "
        f"{r['end_to_end_accuracy']:.3f} | "
        f"{_fmt(r['accuracy_on_detected'])} | {r['detect_ms_per_image'] / 1000:.3f} | "
        f"{_fmt(_seconds(r.get('detect_ms_per_640x480_image')))} | "
        f"{_fmt(_seconds(r.get('pipeline_ms_per_image')))} | {_fmt0(r.get('detect_cpu_ms_per_image'))} | "
        f"{_fmt1(r.get('pipeline_faces_per_s'))} |"
        for r in report["detectors"]
    ]
    return "\n".join([header, *rows])


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


RECALL_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    **{kind: ("kind", (kind,)) for kind in ("single", "group", "grid", "rotated", "small", "jpeg", "photo", "lfw")},
    "<32 px": ("size", ("<32px",)),
    "32-47 px": ("size", ("<48px",)),
    ">=128 px": ("size", (">=128px",)),
    "upright": ("angle", ("0.0",)),
    "turned 15-45": ("angle", tuple(f"{sign}{angle}.0" for sign in ("", "-") for angle in (15, 30, 45))),
    "turned 90": ("angle", ("90.0", "-90.0")),
}
"""Columns of the recall table: a scene kind, a face size bin, or pooled rotation angles."""


def format_recall_table(report: dict[str, Any]) -> str:
    """Recall per detector by kind of scene, face size and rotation (Markdown)."""

    def pooled(recall_by: dict[str, dict[str, dict[str, Any]]], key: str, groups: tuple[str, ...]) -> str:
        cells = [recall_by[key][g] for g in groups if g in recall_by[key]]
        faces = sum(c["faces"] for c in cells)
        return f"{sum(c['recall'] * c['faces'] for c in cells) / faces:.2f}" if faces else "-"

    header = "| detector | " + " | ".join(RECALL_GROUPS) + " |\n| --- |" + " ---: |" * len(RECALL_GROUPS)
    rows = [
        f"| {r['detector']} | "
        + " | ".join(pooled(r["recall_by"], key, groups) for key, groups in RECALL_GROUPS.values())
        + " |"
        for r in report["detectors"]
    ]
    return "\n".join([header, *rows])


def format_alignment(report: dict[str, Any]) -> str:
    """Accuracy on the rotated faces each detector found (and on all it found), classified upright vs as found."""
    lines = []
    for r in report["detectors"]:
        if r.get("accuracy_on_detected_rotated") is not None:
            lines.append(
                f"- `{r['detector']}`: {_fmt(r['accuracy_on_detected_rotated'])} turned upright vs "
                f"{_fmt(r['accuracy_on_detected_rotated_unaligned'])} as found (all faces it found: "
                f"{_fmt(r['accuracy_on_detected'])} vs {_fmt(r['accuracy_on_detected_unaligned'])})"
            )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _fmt0(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _fmt1(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    from fer_jax.cli import run_command

    args = build_parser().parse_args(argv)
    return run_command(
        "python -m experiments.pipeline", lambda: run(args, list(sys.argv[1:] if argv is None else argv))
    )


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from fer_jax.data.cache import file_sha256
    from fer_jax.data.fer2013 import load_fer2013
    from fer_jax.environment import device_description, environment_info
    from fer_jax.files import write_atomic, write_json
    from fer_jax.infer.detect import DETECTORS
    from fer_jax.infer.onnx_export import calibration_faces
    from fer_jax.infer.predict import load_classifier

    dataset = load_fer2013(args.data)
    split = dataset.splits[args.split]
    free_photos = face_free_photos()
    backgrounds = list(free_photos.values())
    seed = SCENE_SEED[args.split]
    scenes = [
        *build_fer_scenes(split.images, split.labels, seed, backgrounds),
        *build_photo_scenes(seed, backgrounds),
        *build_face_free(seed, free_photos),
    ]
    if args.save_scenes:
        Path(args.save_scenes).mkdir(parents=True, exist_ok=True)
        for scene in scenes:
            cv2.imwrite(str(Path(args.save_scenes) / f"{scene.name}.jpg"), scene.image)
    classifier = load_classifier(args.checkpoint)
    onnx, onnx_error = onnx_classifiers(args.checkpoint, calibration_faces(dataset.splits["Training"].images))
    backends = {"jax": classifier, **onnx}
    crops = [f.numpy() for f in split.images]
    env = environment_info()
    report: dict[str, Any] = {
        "benchmark": "experiments/pipeline.py: detection + classification on scenes built from one split's faces",
        "split": args.split,
        "scene_seed": seed,
        "scenes": {
            kind: sum(s.kind == kind for s in scenes)
            for kind in ("single", "group", "grid", "rotated", "small", "jpeg", "photo", "lfw", "free")
        },
        "labelled_faces": sum(len(s.faces) for s in scenes if s.kind not in ("photo", "lfw")),
        "weights": classifier.info,
        "machine": device_description(),
        "load_average": os.getloadavg(),
        "command": " ".join(["python", "-m", "experiments.pipeline", *argv]),
        "git_commit": env["git_commit"],
        "versions": {**env["versions"], **_versions()},
        "dataset_sha256": file_sha256(args.data) if Path(args.data).is_file() else None,
        "classifier_alone": {
            ("accuracy_on_original_crops" if name == "jax" else f"{name}_accuracy_on_original_crops"): _mean(
                guess == label for guess, label in zip(classify(backend, crops), split.labels.tolist())
            )
            for name, backend in backends.items()
        },
        "detectors": [],
    }
    report["classifier_speed"] = classifier_speed(backends)
    if onnx_error:
        report["classifier_speed"]["onnx_error"] = onnx_error
    for name in args.detectors:
        print(f"=== {name}", flush=True)
        report["detectors"].append(evaluate_detector(name, scenes, classifier))
        print(format_table({"detectors": report["detectors"][-1:]}).splitlines()[-1], flush=True)
        for row in report["detectors"][-1].get("by_score_threshold", []):
            print(
                "  score >= {threshold:.2f}: recall {recall:.3f}, false boxes {false_boxes_per_face_free_image:.2f} "
                "per face-free image, {false_boxes_in_face_scenes} in face scenes ({false_boxes_in_photos} in "
                "photos)".format(**row),
                flush=True,
            )
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    if all(_same(previous.get(key), report[key]) for key in ("split", "dataset_sha256", "weights")):
        kept = [d for d in previous.get("detectors", []) if d["detector"] not in args.detectors]
        order = list(DETECTORS)
        report["detectors"] = sorted(kept + report["detectors"], key=lambda d: order.index(d["detector"]))
        report["commands"] = sorted({*previous.get("commands", [previous.get("command")]), report["command"]} - {None})
    write_json(out, report)
    table = format_table(report)
    write_atomic(out.with_suffix(".md"), lambda handle: handle.write(table + "\n"))
    print(table)
    print(f"Wrote {out} and {out.with_suffix('.md')}")
    return report


def _same(before: Any, now: Any) -> bool:
    """Whether a previous report's field matches this run's; weights by content, not by where they were loaded."""
    if isinstance(before, dict) and isinstance(now, dict):
        return {k: v for k, v in before.items() if k != "path"} == {k: v for k, v in now.items() if k != "path"}
    return before == now


def _versions() -> dict[str, str | None]:
    import importlib.metadata

    versions = {}
    for name in ("opencv-python-headless", "dlib-bin", "onnxruntime", "onnx", "scikit-image", "matplotlib"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


if __name__ == "__main__":
    sys.exit(main())
