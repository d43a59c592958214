"""Crop calibration for the RetinaFace detectors: which framing of the detected face the classifier reads best.

    python -m experiments.retinaface_calibration --data ../shared/datasets/fer2013.zip --split PublicTest \\
        --out results/retinaface_calibration_publictest.json
    python -m experiments.retinaface_calibration --data ../shared/datasets/fer2013.zip --split PrivateTest \\
        --out results/retinaface_calibration_privatetest.json

On `experiments/pipeline.py`'s scenes of one split, the detector runs once
with its raw box (`framing=(1, 0)`); each of its FER faces is then cropped at
every (grow, shift) of a grid (side times grow, centre moved along the face's
vertical axis by shift times the new side) and classified. Choose on
PublicTest (never PrivateTest); the PrivateTest run only reports the grid. It
also gives the medians that `fer_jax.detect.RETINAFACE_FRAMING` was first set
from: the FER face's side over RetinaFace's, and its centre's offset.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2

GROW = (0.95, 1.0, 1.05, 1.086, 1.1, 1.15, 1.2, 1.25, 1.3)
SHIFT = (-0.08, -0.06, -0.04, -0.02, -0.01, 0.0, 0.02, 0.04)


def reframe(detection: Any, grow: float, shift: float) -> Any:
    """A detection found with framing (1, 0), reframed as `fer_jax.detect.framed` would with (grow, shift)."""
    x, y, side, _ = detection.box
    angle = math.radians(detection.rotation)
    cx = x + side / 2 - math.sin(angle) * shift * grow * side
    cy = y + side / 2 + math.cos(angle) * shift * grow * side
    new = grow * side
    return dataclasses.replace(detection, box=(round(cx - new / 2), round(cy - new / 2), round(new), round(new)))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from experiments import pipeline
    from fer_jax.data import load_fer2013
    from fer_jax.detect import RETINAFACE_FRAMING, crop, retinaface_detections
    from fer_jax.files import write_json
    from fer_jax.predict import load_classifier

    split = load_fer2013(args.data).splits[args.split]
    free = pipeline.face_free_photos()
    scenes = pipeline.build_fer_scenes(split.images, split.labels, pipeline.SCENE_SEED[args.split], list(free.values()))
    faces = []  # (gray image, raw detection, truth)
    for scene in scenes:
        gray = cv2.cvtColor(scene.image, cv2.COLOR_BGR2GRAY)
        found = retinaface_detections(gray, framing=(1.0, 0.0))
        for truth, which in zip(scene.faces, pipeline.match(scene.faces, [d.box for d in found])):
            if which is not None:
                faces.append((gray, found[which], truth))
    classifier = load_classifier(None)
    labels = [truth.label for _, _, truth in faces]
    grid = []
    for grow in GROW:
        for shift in SHIFT:
            crops = [crop(gray, reframe(d, grow, shift)) for gray, d, _ in faces]
            guesses = pipeline.classify(classifier, crops)
            accuracy = sum(g == label for g, label in zip(guesses, labels)) / len(labels)
            grid.append({"grow": grow, "shift": shift, "accuracy_on_detected": accuracy})
            print(f"grow {grow:.3f} shift {shift:+.2f}: {accuracy:.4f}", flush=True)
    best = max(grid, key=lambda g: g["accuracy_on_detected"])
    upright = [(d, t) for _, d, t in faces if t.angle == 0]
    report = {
        "split": args.split,
        "detector": "retinaface (single pass, RETINAFACE_THRESHOLD)",
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
        "command": " ".join(["python", "-m", "experiments.retinaface_calibration", *sys.argv[1:]]),
    }
    write_json(Path(args.out), report)
    print(f"best: grow {best['grow']} shift {best['shift']} accuracy {best['accuracy_on_detected']:.4f}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    from experiments.pipeline import SCENE_SEED
    from fer_jax.cli import run_command

    parser = argparse.ArgumentParser(
        prog="python -m experiments.retinaface_calibration", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data", required=True, help="the FER-2013 archive")
    parser.add_argument("--split", default="PublicTest", choices=tuple(SCENE_SEED))
    parser.add_argument("--out", required=True, help="the results JSON")
    args = parser.parse_args(argv)
    return run_command("python -m experiments.retinaface_calibration", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
