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
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2

from experiments.scenes import RECIPES, SCENE_SEED, build_face_free, build_photo_scenes, face_free_photos
from experiments.scoring import classifier_speed, classify, evaluate_detector, mean_or_none, onnx_classifiers


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
    parser.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        default="standard",
        help="how the labelled FER scenes are built: standard (the six kinds) or wild (experiments.scenes."
        "build_wild_scenes: tilted, oval-blended, bilinear, colour JPEG); report each in its own --out "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--tta",
        choices=("none", "flip", "crops"),
        help="the classifier's test-time views (default: `fer-jax predict`'s, fer_jax.data.views.DEFAULT_TTA)",
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
    from fer_jax.data.views import DEFAULT_TTA
    from fer_jax.environment import device_description, environment_info
    from fer_jax.files import write_atomic, write_json
    from fer_jax.infer.detect import DETECTORS
    from fer_jax.infer.onnx_export import calibration_faces
    from fer_jax.infer.predict import classifier_of, ensemble

    dataset = load_fer2013(args.data)
    split = dataset.splits[args.split]
    free_photos = face_free_photos()
    backgrounds = list(free_photos.values())
    seed = SCENE_SEED[args.split]
    scenes = [
        *RECIPES[args.recipe](split.images, split.labels, seed, backgrounds),
        *build_photo_scenes(seed, backgrounds),
        *build_face_free(seed, free_photos),
    ]
    if args.save_scenes:
        Path(args.save_scenes).mkdir(parents=True, exist_ok=True)
        for scene in scenes:
            cv2.imwrite(str(Path(args.save_scenes) / f"{scene.name}.jpg"), scene.image)
    classifier = classifier_of(args.checkpoint, args.tta or DEFAULT_TTA)
    onnx, onnx_error = onnx_classifiers(args.checkpoint, calibration_faces(dataset.splits["Training"].images))
    backends = {
        "jax": classifier,
        **{name: ensemble([onnx_classifier], args.tta or DEFAULT_TTA) for name, onnx_classifier in onnx.items()},
    }
    crops = [f.numpy() for f in split.images]
    env = environment_info()
    report: dict[str, Any] = {
        "benchmark": "experiments/pipeline.py: detection + classification on scenes built from one split's faces",
        "split": args.split,
        "recipe": args.recipe,
        "scene_seed": seed,
        "scenes": {
            kind: sum(s.kind == kind for s in scenes)
            for kind in ("single", "group", "grid", "rotated", "small", "jpeg", "wild", "photo", "lfw", "free")
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
            ("accuracy_on_original_crops" if name == "jax" else f"{name}_accuracy_on_original_crops"): mean_or_none(
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
    if all(_same(previous.get(key), report[key]) for key in ("split", "recipe", "dataset_sha256", "weights")):
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
