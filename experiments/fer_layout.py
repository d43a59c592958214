"""Where FER-2013 puts the eyes, nose and mouth: RetinaFace's five landmarks on upscaled Training faces.

    python -m experiments.fer_layout --data ../shared/datasets/fer2013.zip --out results/fer_layout.json

FER-2013's faces are registered: the eyes, nose tip and mouth corners sit at
nearly fixed places of the 48x48 frame. Every `--every`-th Training face is
enlarged SCALE times (bicubic) and padded by PAD pixels (edges replicated), so that
RetinaFace-MobileNet (`fer_jax.infer.retinaface`, the detector `fer-jax predict`
uses) sees a face of about 190 px with some margin; its best face scoring over
THRESHOLD gives five landmarks, mapped back to the 48x48 frame. The layout is the
median of each coordinate (robust to the faces RetinaFace misreads), with the
median absolute deviation as its spread; `fer_jax.infer.detect.FER_LAYOUT` is that
median, rounded to 0.01 px. Training faces only: the test splits stay unseen.
Also: the tilt of each face's eye line (the residual tilt an aligned crop would
remove) and how far the median moves under other enlargements and paddings.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2

SCALE = 4
PAD = 48
THRESHOLD = 0.9
VARIANTS = ((3, 36), (4, 0), (5, 60))
"""(scale, pad) rerun on every fourth sampled face, to show the layout does not hinge on SCALE and PAD."""
NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
"""In RetinaFace's order; 'left' is the image's left."""


def landmarks_48(image: Any, scale: int, pad: int) -> tuple[tuple[float, float], ...] | None:
    """RetinaFace's five landmarks of one 48x48 face, in its pixels (None when no face scores over THRESHOLD)."""
    from fer_jax.infer import retinaface

    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    faces = retinaface.detect(big, THRESHOLD)
    if not faces:
        return None
    return tuple(((x - pad) / scale, (y - pad) / scale) for x, y in faces[0].landmarks)


def median_layout(points: Sequence[tuple[tuple[float, float], ...]]) -> list[list[float]]:
    return [[round(statistics.median(p[i][axis] for p in points), 2) for axis in (0, 1)] for i in range(5)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fer_jax.data.cache import source_sha256
    from fer_jax.data.fer2013 import load_fer2013
    from fer_jax.environment import device_description, environment_info
    from fer_jax.files import write_json

    images = load_fer2013(args.data).splits["Training"].images.numpy()[:: args.every]
    found = [p for p in (landmarks_48(image, SCALE, PAD) for image in images) if p is not None]
    layout = median_layout(found)
    spread = [
        [round(statistics.median(abs(p[i][axis] - layout[i][axis]) for p in found), 2) for axis in (0, 1)]
        for i in range(5)
    ]
    tilts = sorted(abs(math.degrees(math.atan2(p[1][1] - p[0][1], p[1][0] - p[0][0]))) for p in found)
    variants = {}
    for scale, pad in VARIANTS:
        points = [p for p in (landmarks_48(image, scale, pad) for image in images[::4]) if p is not None]
        variants[f"x{scale}, pad {pad}"] = {"faces_found": len(points), "layout": median_layout(points)}
    env = environment_info()
    report = {
        "experiment": "experiments/fer_layout.py: FER-2013 landmark layout, RetinaFace on upscaled Training faces",
        "split": "Training",
        "faces": len(images),
        "faces_found": len(found),
        "scale": SCALE,
        "pad": PAD,
        "score_threshold": THRESHOLD,
        "landmarks": list(NAMES),
        "layout_48x48": layout,
        "median_absolute_deviation": spread,
        "eye_line_tilt_degrees": {q: round(tilts[int(q / 100 * (len(tilts) - 1))], 2) for q in (50, 75, 90, 95)},
        "variants": variants,
        "command": " ".join(["python", "-m", "experiments.fer_layout", *sys.argv[1:]]),
        "machine": device_description(),
        "git_commit": env["git_commit"],
        "versions": env["versions"],
        "dataset_sha256": source_sha256(args.data),
    }
    write_json(Path(args.out), report)
    for name, (x, y), (dx, dy) in zip(NAMES, layout, spread):
        print(f"{name:<12} x {x:6.2f} (MAD {dx:.2f})  y {y:6.2f} (MAD {dy:.2f})")
    print(f"{len(found)} of {len(images)} Training faces; eye-line tilt {report['eye_line_tilt_degrees']}")
    for name, variant in variants.items():
        print(f"{name}: {variant['faces_found']} faces, {variant['layout']}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    from fer_jax.cli import run_command

    parser = argparse.ArgumentParser(prog="python -m experiments.fer_layout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the FER-2013 archive")
    parser.add_argument("--every", type=int, default=4, help="every N-th Training face (default: %(default)s)")
    parser.add_argument("--out", required=True, help="the results JSON")
    args = parser.parse_args(argv)
    return run_command("python -m experiments.fer_layout", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
