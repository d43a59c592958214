"""Facial expressions in photos and videos: a face detector (`fer_jax.infer.detect`) finds the faces, the FER-2013 model
classifies them, in fixed-size batches across images and frames (`fer_jax.infer.batch`).

Each face is cropped from the grayscale image (the detector's square box, turned
upright by the eye line of RetinaFace's landmarks, or by the rotation a sweep
found it at), resized to 48x48 and scaled to [0, 1], as the training faces are. The default
model is the CPU-best net (`vgg_bn` at width 3/8, `experiments/configs/cpu_best.py`) shipped in
`fer_jax/weights/` beside the seed CNN (float16, checked by sha256); `export_weights` writes such
a file from any run folder.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import glob
import hashlib
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import flax.serialization
import jax
import jax.numpy as jnp
from flax import nnx
from tqdm import tqdm

from fer_jax.config import FIELD_TYPES, Config, ConfigError, ModelConfig, check_value
from fer_jax.data.labels import EMOTIONS
from fer_jax.data.views import DEFAULT_TTA, uint8_views, view_list
from fer_jax.errors import DataError
from fer_jax.files import FileFormatError, read_json, write_atomic, write_json
from fer_jax.infer.batch import probabilities, stream
from fer_jax.infer.compile_cache import use_compile_cache
from fer_jax.infer.detect import DEFAULT_DETECTOR, RETINAFACE_LAYOUT_WARP, Box, Detection, crop, get_detector
from fer_jax.models.zoo import count_params, model_skeleton

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "vgg_bn.msgpack"
"""The CPU-best net: it scores higher on PrivateTest than the seed CNN (README, results/cpu_best.json)."""


def weights_source(name_or_path: str | Path) -> Path:
    """A shipped net's name ('vgg_bn', 'seed_cnn') as its weights file; anything else as the path it names."""
    path = Path(name_or_path)
    if path.exists() or len(path.parts) != 1 or path.suffix:
        return path
    return shipped_weights(str(name_or_path))


def shipped_weights(model: str) -> Path:
    """The weights shipped in fer_jax/weights/ for zoo net `model` (e.g. 'seed_cnn'); one-line DataError if none."""
    path = WEIGHTS_DIR / f"{model}.msgpack"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in WEIGHTS_DIR.glob("*.msgpack")))
        raise DataError(f"no shipped weights for {model!r} (shipped: {shipped})")
    return path


ANNOTATE_MIN_SIDE = 256
"""Smaller images (e.g. 48x48 FER faces) are enlarged before drawing, so the label is legible."""
BATCH_MULTIPLE = 8
"""Faces are classified in batches padded to a multiple of this: few shapes, few compilations."""
IMAGE_SUFFIXES = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".png",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".webp",
        ".jp2",
        ".pbm",
        ".pgm",
        ".ppm",
        ".pnm",
        ".pxm",
        ".sr",
        ".ras",
        ".exr",
        ".hdr",
        ".pic",
    }
)
"""What `fer-jax predict` reads from a folder: the image formats OpenCV decodes."""


@dataclass(frozen=True)
class Face:
    """One face: where it is and the model's probability for each of the seven emotions."""

    box: Box
    probabilities: dict[str, float]
    rotation: float = 0.0
    """Degrees (counter-clockwise) the image was turned to classify this face upright."""

    @property
    def emotion(self) -> str:
        return max(self.probabilities, key=self.probabilities.__getitem__)

    @property
    def probability(self) -> float:
        return self.probabilities[self.emotion]

    def to_dict(self) -> dict[str, Any]:
        x, y, width, height = self.box
        return {
            "box": {"x": x, "y": y, "width": width, "height": height},
            "rotation": self.rotation,
            "emotion": self.emotion,
            "probability": self.probability,
            "probabilities": self.probabilities,
        }


class Classifier:
    """A model in eval mode behind one jitted function: 48x48 uint8 faces in, probabilities out."""

    def __init__(self, model: nnx.Module, info: dict[str, Any]) -> None:
        model.eval()
        self.model = model
        """The NNX model (what `fer-jax export-onnx` ports)."""
        graphdef, self._state = nnx.split(model)

        def forward(state: nnx.State, faces: jax.Array) -> jax.Array:
            scaled = faces.astype(jnp.float32)[..., None] / 255.0
            return jax.nn.softmax(nnx.merge(graphdef, state)(scaled))

        self._forward = jax.jit(forward)
        self.info = info
        """Where the weights come from (run folder, file, PrivateTest accuracy, ...)."""

    def __call__(self, faces: jax.Array) -> jax.Array:
        """(N, 48, 48) uint8 faces -> (N, 7) probabilities in `EMOTIONS` order. N is padded to a multiple of
        BATCH_MULTIPLE, unless it is one already (as `fer_jax.infer.batch` makes it): one compilation per shape."""
        faces = jnp.asarray(faces, jnp.uint8)
        count = faces.shape[0]
        if count % BATCH_MULTIPLE:
            faces = jnp.pad(faces, ((0, BATCH_MULTIPLE - count % BATCH_MULTIPLE), (0, 0), (0, 0)))
            return self._forward(self._state, faces)[:count]
        return self._forward(self._state, faces)


class Averaged:
    """Probabilities averaged over test-time views (`fer_jax.data.views`) and over several nets: an ensemble.

    Each batch of N faces becomes its V views, stacked into one batch of V x N faces that each net classifies
    in one call; the mean is taken over views and nets, each counting the same. A batch of `fer_jax.infer.batch`
    (8, 64 or 256 faces) thus reaches every net as V x 8, V x 64 or V x 256 faces: shapes stay fixed, and a
    jitted net compiles at most three of them.
    """

    def __init__(self, members: Sequence[Any], tta: str = "none") -> None:
        if not members:
            raise DataError("an ensemble needs at least one net")
        self.members = list(members)
        self.views = len(view_list(tta))
        self._views = uint8_views(tta)
        nets = [member.info for member in self.members]
        self.info = {**(nets[0] if len(nets) == 1 else {"nets": nets}), "tta": tta, "views": self.views}
        """The net's description (several: each under 'nets'), and the views."""

    def __call__(self, faces: jax.Array) -> jax.Array:
        """(N, 48, 48) uint8 faces -> (N, 7) probabilities in `EMOTIONS` order."""
        faces = jnp.asarray(faces, jnp.uint8)
        count = faces.shape[0]
        views = self._views(faces).reshape(-1, *faces.shape[1:]) if self.views > 1 else faces
        total = sum(jnp.asarray(member(views)).reshape(self.views, count, -1).sum(0) for member in self.members)
        return total / (self.views * len(self.members))


def ensemble(members: Sequence[Any], tta: str = "none") -> Any:
    """Loaded classifiers (JAX or ONNX Runtime) as one: the only one as it is when `tta` is 'none', else
    `Averaged` over their views."""
    return members[0] if len(members) == 1 and tta == "none" else Averaged(members, tta)


# Weights -------------------------------------------------------------------------------------------------------


def export_weights(run_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Write RUN_DIR's best checkpoint as weights `out` (.msgpack) and its description beside (.json).

    The parameters are stored as float16, which halves the file (4.7 MB for
    the seed CNN) and moves the probabilities by about 2e-3 at most; other model state
    (BatchNorm statistics) stays float32. Inference casts back to float32.
    Returns the description: model, source run, its accuracies, sha256.
    """
    from fer_jax.train.restore import restore_weights  # a checkpoint's weights: no optimizer, no train step

    run_dir, out = Path(run_dir), Path(out)
    config, restored, record = restore_weights(run_dir)
    weights = {
        "params": jax.tree.map(lambda x: x.astype(jnp.float16), nnx.to_pure_dict(restored["params"])),
        "model_state": nnx.to_pure_dict(restored["model_state"]),
    }
    data = flax.serialization.msgpack_serialize(weights)
    results_path = run_dir / "results.json"
    results = {}
    if results_path.is_file():
        try:
            results = read_json(results_path, "results JSON")
        except FileFormatError as err:
            print(f"warning: {err}; the description records no accuracy", file=sys.stderr)
    info = {
        "file": out.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "dtype": "float16",
        "model": config.model.name,
        "width": config.model.width,
        "input_crop": config.model.input_crop,
        "parameters": count_params(restored["params"]),
        "source_run": str(run_dir),
        "best_epoch": record["best_epoch"],
        "test_accuracy": results.get("test_accuracy"),
        "val_accuracy": results.get("val_accuracy"),
        "git_commit": results.get("git_commit"),
    }
    write_atomic(out, lambda handle: handle.write(data), mode="wb")
    write_json(out.with_suffix(".json"), info)
    return info


@jax.jit
def as_float32(tree: Any) -> Any:
    """Every array of a weights tree as float32, in one program (not one per shape)."""
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def load_weights(path: str | Path) -> Classifier:
    """A classifier from exported weights; refuses a file whose sha256 differs from its .json's, a description
    that does not describe a zoo net, and weights that do not fit the net it names (one-line DataErrors)."""
    path = Path(path)
    if path.suffix == ".json":
        raise DataError(f"{path}: the weights' description; pass the weights file beside it ({path.stem}.msgpack)")
    info_path = path.with_suffix(".json")
    for needed in (path, info_path):
        if not needed.is_file():
            raise FileNotFoundError(
                f"{needed}: no such file (weights come as NAME.msgpack + NAME.json, "
                "written by `fer-jax export-weights`)"
            )
    data = path.read_bytes()
    info = read_json(info_path, "weights description (NAME.json, written by `fer-jax export-weights`)")
    model_config = weights_model(info, info_path)
    digest = hashlib.sha256(data).hexdigest()
    if digest != info["sha256"]:
        raise DataError(
            f"{path}: sha256 {digest[:16]}... differs from {info_path.name}'s {info['sha256'][:16]}...; "
            "the file is corrupt or was replaced without its .json"
        )
    model = model_skeleton(model_config)
    _, params, model_state = nnx.split(model, nnx.Param, ...)
    try:
        weights = as_float32(flax.serialization.msgpack_restore(data))
        nnx.replace_by_pure_dict(params, weights["params"])
        nnx.replace_by_pure_dict(model_state, weights["model_state"])
    except Exception as err:  # msgpack's, Flax's and JAX's own errors for bytes that are not this net's weights
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise DataError(
            f"{path}: not the weights of the {model_config.name} {info_path.name} describes ({reason})"
        ) from None
    nnx.update(model, params, model_state)
    return Classifier(model, {**info, "path": str(path)})


def weights_model(info: dict[str, Any], info_path: Path) -> ModelConfig:
    """The zoo net a weights description names (`model`, `width`, `input_crop`), checked as config values are;
    a one-line DataError naming the file and the field otherwise."""
    if not isinstance(info.get("sha256"), str):
        raise DataError(f"{info_path}: no 'sha256' string; not a weights description of `fer-jax export-weights`")
    fields = {"name": info.get("model"), "width": info.get("width", 1.0), "input_crop": info.get("input_crop", 0)}
    try:
        model_config = ModelConfig(
            **{
                name: check_value(f"model.{name}", value, FIELD_TYPES[f"model.{name}"])
                for name, value in fields.items()
            }
        )
        Config(model=model_config).validate()
    except ConfigError as err:
        raise DataError(f"{info_path}: {err}".replace("model.name=", "model=")) from None
    return model_config


@functools.lru_cache(maxsize=4)
def load_classifier(checkpoint: str | Path | None = None) -> Classifier:
    """The shipped weights (None, or a shipped net's name: 'vgg_bn', 'seed_cnn'), exported weights (a .msgpack
    file) or a run folder's best checkpoint.

    Turns on the persistent compilation cache first (`fer_jax.infer.compile_cache`): a second process loads the
    classifier's compiled program instead of compiling it."""
    use_compile_cache()
    path = weights_source(checkpoint) if checkpoint else DEFAULT_WEIGHTS
    if not path.is_dir():
        return load_weights(path)
    from fer_jax.train.restore import restore_weights  # Orbax, for run folders only

    config, weights, record = restore_weights(path)
    model = model_skeleton(config.model)
    nnx.update(model, weights["params"], weights["model_state"])
    return Classifier(
        model,
        {"model": config.model.name, "source_run": str(path), "best_epoch": record["best_epoch"], "dtype": "float32"},
    )


# Images and faces ----------------------------------------------------------------------------------------------


def read_image(path: str | Path) -> Any:
    """Any image file OpenCV reads (colour, gray, RGBA, 16-bit, EXIF-rotated) as 8-bit BGR.

    What the decoders print about the file (libjpeg's "Premature end of JPEG file", ...) comes out
    as one warning line naming the file, not as an anonymous line of the library's.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: a folder (give it to `fer-jax predict` to read its images)")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with decoder_messages() as messages:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: not a readable image" + (f" ({messages[0]})" if messages else ""))
    if messages:
        print(f"warning: {path}: {'; '.join(messages)}", file=sys.stderr)
    return image


@contextlib.contextmanager
def decoder_messages() -> Iterator[list[str]]:
    """Collect what C libraries write to file descriptor 2 inside the block, as a list of lines."""
    messages: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield messages
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            messages += [line.strip() for line in capture.read().decode(errors="replace").splitlines() if line.strip()]


def image_files(paths: Sequence[str | Path], skip: Path | None = None) -> list[tuple[Path, str]]:
    """The images `paths` name, in the order given: files; folders, recursively (image suffixes, sorted);
    glob patterns ('**' recurses). Each with '' or why it yields nothing (a folder without images, a
    pattern that matches no file); files under `skip` (the output folder) are left out."""

    def wanted(path: Path) -> bool:
        return path.is_file() and not (skip and path.resolve().is_relative_to(skip.resolve()))

    found: list[tuple[Path, str]] = []
    for given in map(str, paths):
        path = Path(given)
        if path.is_dir():
            images = [p for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and wanted(p)]
            found += [(p, "") for p in images] or [(path, f"{path}: a folder without image files")]
        elif not path.exists() and glob.has_magic(given):
            matches = [Path(m) for m in sorted(glob.glob(given, recursive=True)) if wanted(Path(m))]
            found += [(m, "") for m in matches] or [(path, f"{given}: no file matches this pattern")]
        else:
            found.append((path, ""))
    return found


def to_bgr(image: Any) -> Any:
    """An image array (NumPy, torch, JAX; (H, W), (H, W, 3) RGB or (H, W, 4) RGBA; uint8, 16-bit or floats
    in [0, 1]) as 8-bit BGR, OpenCV's layout. Converted through JAX, which reads all three."""
    array = jnp.asarray(image)
    if jnp.issubdtype(array.dtype, jnp.floating):
        array = (jnp.clip(array, 0, 1) * 255).round().astype(jnp.uint8)
    elif array.dtype in (jnp.uint16, jnp.int16):
        array = (jnp.clip(array.astype(jnp.float32), 0, 65535) / 257).round().astype(jnp.uint8)
    elif array.dtype != jnp.uint8:
        raise DataError(f"image array of {array.dtype}: expected uint8, 16-bit or floats in [0, 1]")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim in (2, 3) and array.shape[0] * array.shape[1] == 0:
        raise DataError(f"image array of shape {tuple(array.shape)}: the image is empty")
    conversions = {2: cv2.COLOR_GRAY2BGR, 3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGR}
    channels = 2 if array.ndim == 2 else array.shape[2] if array.ndim == 3 else 0
    if channels not in conversions:
        raise DataError(f"image array of shape {tuple(array.shape)}: expected (H, W), (H, W, 3) or (H, W, 4)")
    return cv2.cvtColor(jax.device_get(array), conversions[channels])


def one_line(err: BaseException) -> str:
    """An exception's message as one line (its first non-empty one, at most 300 characters)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(err).__name__


def detect_and_crop(
    bgr: Any, detect: bool = True, detector: str = DEFAULT_DETECTOR, warp: bool = RETINAFACE_LAYOUT_WARP
) -> tuple[list[Detection], list[Any]]:
    """The faces of an 8-bit BGR image and their 48x48 crops; `detect=False`: the whole image is one face. `warp`:
    faces with landmarks (RetinaFace's) warped onto FER-2013's layout (`fer_jax.infer.detect.layout_warp`)."""
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    found = get_detector(detector)(gray) if detect else [Detection((0, 0, gray.shape[1], gray.shape[0]))]
    return found, [crop(gray, detection, warp=warp) for detection in found]


def to_faces(found: Sequence[Detection], face_probabilities: Sequence[Sequence[float]]) -> list[Face]:
    return [Face(d.box, dict(zip(EMOTIONS, p)), d.rotation) for d, p in zip(found, face_probabilities)]


def classify(
    bgr: Any,
    classifier: Any,
    detect: bool = True,
    detector: str = DEFAULT_DETECTOR,
    warp: bool = RETINAFACE_LAYOUT_WARP,
) -> list[Face]:
    """The faces of an 8-bit BGR image with their probabilities; `detect=False`: the whole image is one face."""
    found, crops = detect_and_crop(bgr, detect, detector, warp)
    return to_faces(found, probabilities(classifier, crops))


Checkpoint = str | Path | Any | None
"""What `checkpoint` arguments take: None (the shipped vgg_bn), a shipped net's name ('vgg_bn', 'seed_cnn'), an
exported .msgpack, a run folder, a loaded classifier, or a list of these (an ensemble)."""


def predict(
    image: str | os.PathLike | Any,
    checkpoint: Checkpoint | Sequence[Checkpoint] = None,
    detect: bool = True,
    detector: str = DEFAULT_DETECTOR,
    tta: str = DEFAULT_TTA,
    warp: bool = RETINAFACE_LAYOUT_WARP,
) -> list[Face]:
    """Find the faces in `image` (a file, or an RGB/gray array) and give each one's box and 7 probabilities.

    `checkpoint`: None for the shipped weights, a shipped net's name, an exported .msgpack, a run
    folder, or a loaded classifier (e.g. `fer_jax.infer.onnx_export.OnnxClassifier`, used as it is, without `tta`);
    a list of them is an ensemble (probabilities averaged, with `tta`). `tta`: test-time views averaged, 'flip'
    (the default: the face and its mirror), 'none' (one view) or 'crops' (10; `fer_jax.data.views`). `warp`:
    RetinaFace's faces warped onto FER-2013's layout by their landmarks instead of cut by their box.
    `detect=False` treats the whole image as one face (already-cropped faces
    such as FER-2013's). `detector`: a name of `fer_jax.infer.detect.DETECTORS`. No
    face found: an empty list.
    """
    use_compile_cache()  # before to_bgr's first JAX computation
    classifier = classifier_of(checkpoint, tta)
    bgr = read_image(image) if isinstance(image, (str, os.PathLike)) else to_bgr(image)
    return classify(bgr, classifier, detect, detector, warp)


def classifier_of(checkpoint: Checkpoint | Sequence[Checkpoint], tta: str = DEFAULT_TTA) -> Any:
    """A loaded classifier as it is (its views are its own: `fer-jax predict` builds its `ensemble` first);
    anything else through `load_classifier`, with test-time views `tta`; a list (of loaded or named nets) as their
    `ensemble` with views `tta`."""
    if callable(checkpoint):
        return checkpoint
    members = checkpoint if isinstance(checkpoint, (list, tuple)) else [checkpoint]
    return ensemble([member if callable(member) else load_classifier(member) for member in members], tta)


# Outputs -------------------------------------------------------------------------------------------------------


def annotate(bgr: Any, faces: Sequence[Face], min_side: int = 0) -> Any:
    """A copy of the image with each face's box and top emotion + probability drawn on it.

    Images smaller than `min_side` are enlarged first (nearest neighbour) so the text stays legible.
    """
    factor = max(1, math.ceil(min_side / max(bgr.shape[:2])))
    out = cv2.resize(bgr, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST) if factor > 1 else bgr.copy()
    thickness = max(1, round(max(out.shape[:2]) / 500))
    font_scale = 0.5 * thickness
    for face in faces:
        x, y, width, height = (v * factor for v in face.box)
        cv2.rectangle(out, (x, y), (x + width - 1, y + height - 1), (0, 220, 0), 2 * thickness)
        label = f"{face.emotion} {face.probability:.2f}"
        (text_width, text_height), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = y - text_height - baseline - 4 * thickness if y > text_height + baseline + 4 * thickness else y
        cv2.rectangle(
            out,
            (x, top),
            (x + text_width + 4 * thickness, top + text_height + baseline + 4 * thickness),
            (0, 220, 0),
            cv2.FILLED,
        )
        cv2.putText(
            out,
            label,
            (x + 2 * thickness, top + text_height + 2 * thickness),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (0, 0, 0),
            thickness,
            cv2.LINE_AA,
        )
    return out


def write_image(path: Path, bgr: Any) -> None:
    """Encode by the file's extension and write atomically."""
    ok, encoded = cv2.imencode(path.suffix, bgr)
    if not ok:
        raise DataError(f"{path}: OpenCV cannot encode {path.suffix} images")
    write_atomic(path, lambda handle: handle.write(encoded.tobytes()), mode="wb")


CSV_COLUMNS = ("x", "y", "width", "height", "emotion", "probability", *EMOTIONS)


def face_row(face: Face) -> list[Any]:
    return [*face.box, face.emotion, f"{face.probability:.4f}", *(f"{face.probabilities[e]:.4f}" for e in EMOTIONS)]


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    write_atomic(path, lambda handle: csv.writer(handle, lineterminator="\n").writerows([header, *rows]))


def format_faces(name: str, faces: Sequence[Face]) -> str:
    """A short table: one line per face with its box and the seven probabilities."""
    if not faces:
        return f"{name}: no face found"
    lines = [
        f"{name}: {len(faces)} face{'s' if len(faces) > 1 else ''}",
        f"  {'#':>2} {'box x,y,w,h':<20} {'emotion':<9}" + "".join(f"{e:>9}" for e in EMOTIONS),
    ]
    for number, face in enumerate(faces, 1):
        box = ",".join(str(v) for v in face.box)
        lines.append(
            f"  {number:>2} {box:<20} {face.emotion:<9}" + "".join(f"{face.probabilities[e]:>9.3f}" for e in EMOTIONS)
        )
    return "\n".join(lines)


def predict_files(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    checkpoint: Checkpoint | Sequence[Checkpoint] = None,
    detect: bool = True,
    detector: str = DEFAULT_DETECTOR,
    tta: str = DEFAULT_TTA,
    warp: bool = RETINAFACE_LAYOUT_WARP,
) -> list[dict[str, Any]]:
    """Classify the faces of each image; write OUT/<name>_annotated.jpg, predictions.json and predictions.csv.

    `paths` may hold files, folders (their images, recursively) and glob patterns (`image_files`).
    The faces of consecutive images are classified together in fixed-size batches (`fer_jax.infer.batch.stream`).
    An unreadable file is reported in one line on stderr and recorded with its
    error; the others still run. `checkpoint`, `tta` and `warp` as for `predict`. Returns one record per file.
    """
    out_dir = Path(out_dir)
    classifier = classifier_of(checkpoint, tta)
    get_detector(detector)
    records, rows, used = [], [], set()

    def detected() -> Any:
        for path, nothing in image_files(paths, skip=out_dir):
            try:
                if nothing:
                    raise DataError(nothing)
                bgr = read_image(path)
                found, crops = detect_and_crop(bgr, detect, detector, warp)
            except DataError as err:
                yield (path, None, [], str(err)), []
                continue
            except (cv2.error, MemoryError) as err:  # one image the libraries cannot handle; the batch goes on
                yield (path, None, [], f"{path}: could not be processed ({one_line(err)})"), []
                continue
            yield (path, bgr, found, ""), crops

    for (path, bgr, found, error), face_probabilities in stream(detected(), classifier):
        if error:
            print(f"{error}; skipped", file=sys.stderr)
            records.append({"file": str(path), "error": error})
            continue
        faces = to_faces(found, face_probabilities)
        name = f"{path.stem}_annotated.jpg"
        while name in used:
            name = f"{Path(name).stem}_{len(used)}.jpg"
        used.add(name)
        write_image(out_dir / name, annotate(bgr, faces, ANNOTATE_MIN_SIDE))
        print(format_faces(str(path), faces))
        records.append({"file": str(path), "annotated": str(out_dir / name), "faces": [f.to_dict() for f in faces]})
        rows += [[str(path), number, *face_row(face)] for number, face in enumerate(faces, 1)]
    write_json(
        out_dir / "predictions.json",
        {
            "weights": classifier.info,
            "detect": detect,
            "detector": detector if detect else None,
            "crop": "layout" if warp else "box",
            "images": records,
        },
    )
    write_csv(out_dir / "predictions.csv", ("file", "face", *CSV_COLUMNS), rows)
    print(f"Annotated images, predictions.json and predictions.csv in {out_dir}/")
    return records


def predict_video(
    path: str | Path,
    out_dir: str | Path,
    checkpoint: Checkpoint | Sequence[Checkpoint] = None,
    detect: bool = True,
    every: int = 1,
    detector: str = DEFAULT_DETECTOR,
    tta: str = DEFAULT_TTA,
    warp: bool = RETINAFACE_LAYOUT_WARP,
) -> dict[str, Any]:
    """Classify the faces of every `every`-th frame of a video file, with a progress bar.

    The faces of up to `fer_jax.infer.batch.MAX_PENDING_ITEMS` consecutive frames are
    classified together in fixed-size batches.

    Writes OUT/<name>_annotated.mp4 (every frame, each showing the faces of the
    last classified frame) and OUT/<name>_frames.csv (one row per face of each
    classified frame; a frame without a face gets a row with faces=0).
    """
    path, out_dir = Path(path), Path(out_dir)
    if every < 1:
        raise DataError(f"every must be 1 or more (every N-th frame), got {every}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    classifier = classifier_of(checkpoint, tta)
    get_detector(detector)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own messages off: a bad file gets our one line
    capture = cv2.VideoCapture(str(path))
    ok, frame = capture.read()
    if not ok:
        capture.release()
        raise DataError(f"{path}: not a readable video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    out_dir.mkdir(parents=True, exist_ok=True)
    video_path, partial = out_dir / f"{path.stem}_annotated.mp4", out_dir / f".{path.stem}_annotated.partial.mp4"
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frame.shape[1], frame.shape[0]))
    rows: list[list[Any]] = []
    faces: list[Face] = []
    index, with_faces = 0, 0

    def frames() -> Any:
        nonlocal ok, frame, index
        while ok:
            found, crops = detect_and_crop(frame, detect, detector, warp) if index % every == 0 else (None, [])
            yield (index, frame, found), crops
            ok, frame = capture.read()
            index += 1

    try:
        with tqdm(total=total, unit="frame", desc=path.name) as progress:
            for (number, image, found), face_probabilities in stream(frames(), classifier):
                if found is not None:
                    faces = to_faces(found, face_probabilities)
                    with_faces += bool(faces)
                    time_s = round(number / fps, 3)
                    rows += [[number, time_s, len(faces), n, *face_row(face)] for n, face in enumerate(faces, 1)]
                    if not faces:
                        rows.append([number, time_s, 0, *[""] * (1 + len(CSV_COLUMNS))])
                writer.write(annotate(image, faces))
                progress.update()
        writer.release()
        os.replace(partial, video_path)
    finally:
        writer.release()
        capture.release()
        partial.unlink(missing_ok=True)
    csv_path = out_dir / f"{path.stem}_frames.csv"
    write_csv(csv_path, ("frame", "time_s", "faces", "face", *CSV_COLUMNS), rows)
    summary = {
        "file": str(path),
        "frames": index,
        "classified_frames": -(-index // every),
        "frames_with_faces": with_faces,
        "annotated": str(video_path),
        "csv": str(csv_path),
    }
    print(
        f"{path}: {index} frames, {summary['classified_frames']} classified, {with_faces} with a face; "
        f"wrote {video_path} and {csv_path}"
    )
    return summary
