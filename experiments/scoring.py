"""Scoring of the pipeline benchmark (`experiments.pipeline`): matching detections to true faces, a detector's
recall, false boxes, accuracy and time over the scenes, score curves, and the classifier's speed."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import torch

from experiments.scenes import Scene, Truth

SCORE_THRESHOLDS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Scores a dlib or RetinaFace detection must reach, for the detection-only curve `by_score_threshold` (for tuning
`fer_jax.infer.detect.DLIB_THRESHOLD` and `RETINAFACE_THRESHOLD` on PublicTest scenes; the detector's own threshold
is the curve's floor)."""
CLASSIFIER_BATCH = 256


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
        "recall": mean_or_none(r["found"] for r in records),
        "recall_fer": mean_or_none(r["found"] for r in labelled),
        "faces": len(records),
        "faces_found": faces_found,
        "false_boxes_per_face_free_image": false_boxes_free / max(1, free_images),
        "false_boxes_in_face_scenes": false_boxes_faces,
        "false_boxes_per_face_scene": false_boxes_faces / max(1, images - free_images),
        "end_to_end_accuracy": sum(r.get("correct", False) for r in labelled) / len(labelled),
        "accuracy_on_detected": mean_or_none(r["correct"] for r in detected),
        "accuracy_on_detected_unaligned": mean_or_none(r["correct_unaligned"] for r in detected),
        "accuracy_on_detected_rotated": mean_or_none(r["correct"] for r in rotated),
        "accuracy_on_detected_rotated_unaligned": mean_or_none(r["correct_unaligned"] for r in rotated),
        "boxes": len(crops),
        "detect_ms_per_image": 1000 * detect_seconds / images,
        "detect_ms_per_640x480_image": 1000 * mean_or_none(vga_seconds) if vga_seconds else None,
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


def score_curve(
    scenes: Sequence[Scene],
    detections_per_scene: Sequence[Sequence[Any]],
    thresholds: Sequence[float] = SCORE_THRESHOLDS,
) -> list[dict[str, Any]]:
    """Detection figures had the detector kept only the boxes scoring at least each of `thresholds` (exact
    for a single pass, which merges boxes best score first; close for a sweep, which merges upright first)."""
    rows = []
    for threshold in thresholds:
        count = dict.fromkeys(
            ("faces", "found", "face_scenes", "free_images", "free_boxes", "false_in_faces", "false_in_photos"), 0
        )
        for scene, detections in zip(scenes, detections_per_scene):
            kept = [d.box for d in detections if d.score >= threshold]
            if scene.kind == "free":
                count["free_images"] += 1
                count["free_boxes"] += len(kept)
                continue
            matched = sum(m is not None for m in match(scene.faces, kept))
            count["face_scenes"] += 1
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
                "false_boxes_per_face_scene": count["false_in_faces"] / max(1, count["face_scenes"]),
            }
        )
    return rows


def mean_or_none(values: Any) -> float | None:
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
