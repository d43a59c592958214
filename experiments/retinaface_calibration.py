"""Calibration of the RetinaFace detectors: score thresholds and passes, and the crop the classifier reads best.

    python -m experiments.retinaface_calibration --data ../shared/datasets/fer2013.zip --split PublicTest \\
        --part framing --out results/retinaface_calibration_publictest.json
    python -m experiments.retinaface_calibration --data ../shared/datasets/fer2013.zip --split PublicTest \\
        --part detection --out results/retinaface_passes_publictest.json
    python -m experiments.retinaface_calibration --data ../shared/datasets/fer2013.zip --split PublicTest \\
        --part enlarge --out results/retinaface_enlarge_publictest.json
    python -m experiments.retinaface_calibration --data ../shared/datasets/fer2013.zip --split PublicTest \\
        --part layout --out results/retinaface_layout_publictest.json

`--part detection`: on all of `experiments/pipeline.py`'s scenes of the split
(FER faces, photos, LFW, face-free images), each pass of `retinaface-sweep`
(upright, +-20, +-30 and +-90 degrees at score 0.5, and the 2x pass for small
faces) runs once; combinations of passes are merged as the detector merges
them and scored at each of experiments.scoring.SCORE_THRESHOLDS from 0.5 up: recall,
false boxes per face scene and per face-free image.

`--part enlarge`: on the same scenes, `retinaface`'s single upright pass on the
image enlarged by each of ENLARGE, scored at each of ENLARGE_THRESHOLDS, with
the detector's median seconds per 640x480 image: what
`fer_jax.infer.detect.RETINAFACE_ENLARGE` and `RETINAFACE_THRESHOLD` were chosen from.

`--part framing`: on the split's FER scenes, the `retinaface` detector runs once
with its raw box (`framing=(1, 0)`); each of its FER faces is then cropped at
every (grow, shift) of a grid (side times grow, centre moved along the face's
vertical axis by shift times the new side) and classified; then, at the
framing in use, turned upright by its eye line when tilted by more than each
of ALIGN_MIN_ANGLES. Choose on
PublicTest (never PrivateTest); the PrivateTest run only reports the grid. It
also gives the medians that `fer_jax.infer.detect.RETINAFACE_FRAMING` was first set
from: the FER face's side over RetinaFace's, and its centre's offset.

`--part layout`: on the split's FER scenes, the default detector as shipped; each
FER face it finds is cropped by its framed box (turned upright over 10 degrees, as
today) and by the similarity warp of its five landmarks onto
`fer_jax.infer.detect.FER_LAYOUT` (`layout_warp`), and classified with one view and
with flip TTA: accuracy on the detected faces, upright and rotated. `--recipe wild` builds
the scenes by `experiments.scenes.build_wild_scenes` instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2

GROW = (0.95, 1.0, 1.05, 1.086, 1.1, 1.15, 1.2, 1.25, 1.3)
SHIFT = (-0.08, -0.06, -0.04, -0.02, -0.01, 0.0, 0.02, 0.04)


def accuracy_by_rotation(correct: list[bool], faces: list[Any]) -> dict[str, float]:
    """Accuracy on every detected face, on the upright ones and on the rotated ones (`faces`: (gray, detection,
    truth) in the order of `correct`)."""
    return {
        "accuracy_on_detected": sum(correct) / len(correct),
        "upright_faces": statistics.mean(c for c, (_, _, t) in zip(correct, faces) if t.angle == 0),
        "rotated_faces": statistics.mean(c for c, (_, _, t) in zip(correct, faces) if t.angle != 0),
    }


def reframe(detection: Any, grow: float, shift: float) -> Any:
    """A detection found with framing (1, 0), reframed as `fer_jax.infer.detect.framed` would with (grow, shift)."""
    x, y, side, _ = detection.box
    angle = math.radians(detection.rotation)
    cx = x + side / 2 - math.sin(angle) * shift * grow * side
    cy = y + side / 2 + math.cos(angle) * shift * grow * side
    new = grow * side
    return dataclasses.replace(detection, box=(round(cx - new / 2), round(cy - new / 2), round(new), round(new)))


ALIGN_MIN_ANGLES = (0.0, 5.0, 10.0, 15.0, 20.0, 360.0)
"""A face is turned upright by its eye line when it is tilted by more than this (360: never)."""
PASSES: dict[str, dict[str, Any]] = {
    "upright": {"angles": (0.0,)},
    "+-20": {"angles": (20.0, -20.0)},
    "+-30": {"angles": (30.0, -30.0)},
    "+-90": {"angles": (90.0, -90.0)},
    "2x small": {"angles": ()},
}
"""The passes of a sweep, each run on its own (the 2x pass with fer_jax.infer.detect.RETINAFACE_UPSCALE)."""
COMBINATIONS = (
    ("upright",),
    ("upright", "+-20"),
    ("upright", "+-30"),
    ("upright", "+-90"),
    ("upright", "+-20", "+-90"),
    ("upright", "2x small"),
    ("upright", "+-20", "2x small"),
    ("upright", "+-20", "+-90", "2x small"),
    ("upright", "+-30", "+-90", "2x small"),
)
"""`retinaface` is the first, `retinaface-sweep` the last but one."""
PASS_FLOOR = 0.5
ENLARGE = (1.0, 1.15, 1.25, 1.33, 1.5)
"""Factors `--part enlarge` tries."""
ENLARGE_THRESHOLDS = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9)


def split_scenes(args: argparse.Namespace) -> list[Any]:
    """All of experiments.pipeline's scenes of `args.split`: FER faces, photos, LFW and face-free images."""
    from experiments.scenes import SCENE_SEED, build_face_free, build_fer_scenes, build_photo_scenes, face_free_photos
    from fer_jax.data.fer2013 import load_fer2013

    split = load_fer2013(args.data).splits[args.split]
    free = face_free_photos()
    seed = SCENE_SEED[args.split]
    return [
        *build_fer_scenes(split.images, split.labels, seed, list(free.values())),
        *build_photo_scenes(seed, list(free.values())),
        *build_face_free(seed, free),
    ]


def detection_part(args: argparse.Namespace) -> dict[str, Any]:
    """Recall and false boxes of each combination of passes at each score threshold (see the module's doc)."""
    from experiments.scoring import score_curve
    from fer_jax.infer.detect import RETINAFACE_UPSCALE, merge, retinaface_detections

    scenes = split_scenes(args)
    found: dict[str, list[list[Any]]] = {name: [] for name in PASSES}
    for scene in scenes:
        gray = cv2.cvtColor(scene.image, cv2.COLOR_BGR2GRAY)
        for name, options in PASSES.items():
            upscale = RETINAFACE_UPSCALE if name == "2x small" else None
            found[name].append(
                retinaface_detections(gray, threshold=PASS_FLOOR, upscale=upscale, merged=False, **options)
            )
    face_scenes = sum(scene.kind != "free" for scene in scenes)
    rows = []
    for combination in COMBINATIONS:
        merged = [
            merge(sorted((d for name in combination for d in found[name][i]), key=lambda d: -d.score))
            for i in range(len(scenes))
        ]
        for row in score_curve(scenes, merged):
            if row["threshold"] >= PASS_FLOOR:
                rows.append({"passes": " + ".join(combination), **row})
                print(
                    "{passes}, score >= {threshold}: recall {recall:.3f}, false boxes {false_boxes_per_face_scene:.3f} "
                    "per face scene, {false_boxes_per_face_free_image:.3f} per face-free image".format(**rows[-1]),
                    flush=True,
                )
    return {"split": args.split, "scenes": len(scenes), "face_scenes": face_scenes, "rows": rows}


def enlarge_part(args: argparse.Namespace) -> dict[str, Any]:
    """Recall, false boxes and time of the single pass on the image enlarged by each of ENLARGE (module's doc)."""
    from experiments.scoring import score_curve
    from fer_jax.infer.detect import retinaface_detections

    scenes = split_scenes(args)
    face_scenes = sum(scene.kind != "free" for scene in scenes)
    grays = [cv2.cvtColor(scene.image, cv2.COLOR_BGR2GRAY) for scene in scenes]
    rows = []
    for factor in ENLARGE:
        found, seconds = [], []
        for gray in grays:
            began = time.perf_counter()
            found.append(retinaface_detections(gray, threshold=min(ENLARGE_THRESHOLDS), enlarge=factor))
            if gray.shape == (480, 640):
                seconds.append(time.perf_counter() - began)
        for row in score_curve(scenes, found, ENLARGE_THRESHOLDS):
            rows.append({"enlarge": factor, **row, "seconds_per_640x480_image": statistics.median(seconds)})
            print(
                "x{enlarge}, score >= {threshold}: recall {recall:.3f}, false boxes {false_boxes_per_face_scene:.3f} "
                "per face scene, {false_boxes_per_face_free_image:.3f} per face-free image, "
                "{seconds_per_640x480_image:.4f} s per 640x480 image".format(**rows[-1]),
                flush=True,
            )
    return {"split": args.split, "scenes": len(scenes), "face_scenes": face_scenes, "rows": rows}


def framing_part(args: argparse.Namespace) -> dict[str, Any]:
    """Accuracy on the detected FER faces at each framing of the grid (see the module's doc)."""
    from experiments.scenes import SCENE_SEED, build_fer_scenes, face_free_photos
    from experiments.scoring import classify, match
    from fer_jax.data.fer2013 import load_fer2013
    from fer_jax.infer.detect import (
        RETINAFACE_ALIGN_MIN_ANGLE,
        RETINAFACE_ENLARGE,
        RETINAFACE_FRAMING,
        crop,
        retinaface_detections,
    )
    from fer_jax.infer.predict import load_classifier

    split = load_fer2013(args.data).splits[args.split]
    free = face_free_photos()
    scenes = build_fer_scenes(split.images, split.labels, SCENE_SEED[args.split], list(free.values()))
    faces = []  # (gray image, raw detection, truth)
    for scene in scenes:
        gray = cv2.cvtColor(scene.image, cv2.COLOR_BGR2GRAY)
        found = retinaface_detections(gray, framing=(1.0, 0.0), align_min_angle=0.0, enlarge=RETINAFACE_ENLARGE)
        for truth, which in zip(scene.faces, match(scene.faces, [d.box for d in found])):
            if which is not None:
                faces.append((gray, found[which], truth))
    classifier = load_classifier(None)
    labels = [truth.label for _, _, truth in faces]

    def turned(detection: Any, min_angle: float) -> Any:
        return detection if abs(detection.rotation) > min_angle else dataclasses.replace(detection, rotation=0.0)

    grid = []
    for grow in GROW:
        for shift in SHIFT:
            crops = [crop(gray, turned(reframe(d, grow, shift), RETINAFACE_ALIGN_MIN_ANGLE)) for gray, d, _ in faces]
            guesses = classify(classifier, crops)
            accuracy = sum(g == label for g, label in zip(guesses, labels)) / len(labels)
            grid.append({"grow": grow, "shift": shift, "accuracy_on_detected": accuracy})
            print(f"grow {grow:.3f} shift {shift:+.2f}: {accuracy:.4f}", flush=True)
    best = max(grid, key=lambda g: g["accuracy_on_detected"])
    alignment = []
    for min_angle in ALIGN_MIN_ANGLES:
        crops = [crop(gray, turned(reframe(d, *RETINAFACE_FRAMING), min_angle)) for gray, d, _ in faces]
        guesses = classify(classifier, crops)
        correct = [g == t.label for g, (_, _, t) in zip(guesses, faces)]
        alignment.append({"turned_if_tilted_over_degrees": min_angle, **accuracy_by_rotation(correct, faces)})
        print(
            "turned upright when tilted over {turned_if_tilted_over_degrees} degrees: {accuracy_on_detected:.4f} "
            "(upright faces {upright_faces:.4f}, rotated {rotated_faces:.4f})".format(**alignment[-1]),
            flush=True,
        )
    upright = [(d, t) for _, d, t in faces if t.angle == 0]
    report = {
        "split": args.split,
        "detector": "retinaface (single pass, RETINAFACE_ENLARGE, RETINAFACE_THRESHOLD)",
        "faces_detected": len(faces),
        "fer_faces": sum(len(s.faces) for s in scenes),
        "median_fer_side_over_retinaface_side": statistics.median(t.side / d.box[2] for d, t in upright),
        "median_centre_offset_over_fer_side": statistics.median(
            (t.cy - d.box[1] - d.box[3] / 2) / t.side for d, t in upright
        ),
        "framing_in_use": list(RETINAFACE_FRAMING),
        "accuracy_at_framing_in_use": next(
            (g["accuracy_on_detected"] for g in grid if (g["grow"], g["shift"]) == tuple(RETINAFACE_FRAMING)), None
        ),
        "best": best,
        "grid": grid,
        "alignment_at_framing_in_use": alignment,
    }
    print(f"best: grow {best['grow']} shift {best['shift']} accuracy {best['accuracy_on_detected']:.4f}")
    return report


def layout_part(args: argparse.Namespace) -> dict[str, Any]:
    """Accuracy on the detected FER faces: today's framed box crop against the warp onto FER_LAYOUT, each with
    one view and with flip TTA (see the module's doc)."""
    from experiments.scenes import RECIPES, SCENE_SEED, face_free_photos
    from experiments.scoring import classify, match
    from fer_jax.data.fer2013 import load_fer2013
    from fer_jax.infer.detect import DEFAULT_DETECTOR, FER_LAYOUT, crop, get_detector
    from fer_jax.infer.predict import classifier_of

    split = load_fer2013(args.data).splits[args.split]
    build = RECIPES[args.recipe]
    scenes = build(split.images, split.labels, SCENE_SEED[args.split], list(face_free_photos().values()))
    detector = get_detector(DEFAULT_DETECTOR)
    faces = []  # (gray image, detection, truth)
    for scene in scenes:
        gray = cv2.cvtColor(scene.image, cv2.COLOR_BGR2GRAY)
        found = detector(gray)
        for truth, which in zip(scene.faces, match(scene.faces, [d.box for d in found])):
            if which is not None:
                faces.append((gray, found[which], truth))
    crops = {
        "box": [crop(gray, d, warp=False) for gray, d, _ in faces],
        "layout": [crop(gray, d, warp=True) for gray, d, _ in faces],
    }
    rows, right = [], {}
    for tta in ("none", "flip"):
        classifier = classifier_of(None, tta)
        for name, images in crops.items():
            correct = [g == t.label for g, (_, _, t) in zip(classify(classifier, images), faces)]
            right[name, tta] = correct
            rows.append({"crop": name, "tta": tta, **accuracy_by_rotation(correct, faces)})
            print(
                "{crop} crop, tta {tta}: {accuracy_on_detected:.4f} (upright faces {upright_faces:.4f}, rotated "
                "{rotated_faces:.4f})".format(**rows[-1]),
                flush=True,
            )
    discordant = {
        tta: {
            "layout_right_box_wrong": sum(w and not b for w, b in zip(right["layout", tta], right["box", tta])),
            "box_right_layout_wrong": sum(b and not w for w, b in zip(right["layout", tta], right["box", tta])),
        }
        for tta in ("none", "flip")
    }
    print(f"faces one crop gets right and the other wrong: {discordant}")
    return {
        "discordant_faces": discordant,
        "split": args.split,
        "recipe": args.recipe,
        "detector": f"{DEFAULT_DETECTOR} as shipped (its framing for the box crop; its landmarks for the warp)",
        "layout": [list(point) for point in FER_LAYOUT],
        "faces_detected": len(faces),
        "fer_faces": sum(len(s.faces) for s in scenes),
        "rows": rows,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fer_jax.data.cache import source_sha256
    from fer_jax.environment import device_description, environment_info
    from fer_jax.files import write_json

    parts = {"detection": detection_part, "enlarge": enlarge_part, "framing": framing_part, "layout": layout_part}
    report = parts[args.part](args)
    env = environment_info()
    report["command"] = " ".join(["python", "-m", "experiments.retinaface_calibration", *sys.argv[1:]])
    report["machine"], report["git_commit"], report["versions"] = (
        device_description(),
        env["git_commit"],
        env["versions"],
    )
    report["dataset_sha256"] = source_sha256(args.data)
    write_json(Path(args.out), report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    from experiments.scenes import SCENE_SEED
    from fer_jax.cli import run_command

    parser = argparse.ArgumentParser(
        prog="python -m experiments.retinaface_calibration", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data", required=True, help="the FER-2013 archive")
    parser.add_argument("--split", default="PublicTest", choices=tuple(SCENE_SEED))
    parser.add_argument("--part", choices=("framing", "detection", "enlarge", "layout"), default="framing")
    parser.add_argument(
        "--recipe",
        choices=("standard", "wild"),
        default="standard",
        help="how --part layout builds its FER scenes (experiments.scenes.RECIPES; default: %(default)s)",
    )
    parser.add_argument("--out", required=True, help="the results JSON")
    args = parser.parse_args(argv)
    return run_command("python -m experiments.retinaface_calibration", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
