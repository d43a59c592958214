"""FER-2013 from any of its layouts, mapped onto one label order, batched by torchvision.

Layouts:
- the Kaggle archive `msambare/fer2013` (`train/<class>/Training_*.jpg`,
  `test/<class>/{PublicTest,PrivateTest}_*.jpg`), as a zip or extracted folder;
- the original challenge file `fer2013.csv` (`emotion,pixels,Usage`).

Every layout maps onto the challenge's label order (`EMOTIONS`); the folder
loader's alphabetical class order is remapped by name, never trusted.
Splits follow the literature: Training to train, PublicTest to select,
PrivateTest to report.
"""

from __future__ import annotations

import contextlib
import csv
import os
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import jax
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from fer_jax.config import DataConfig
from fer_jax.data.augment import ERASING_RATIO, ERASING_SCALE, FILLS, INTERPOLATIONS, check_choice
from fer_jax.data.cache import content_folder
from fer_jax.data.labels import EMOTIONS, IMAGE_SIZE, SPLITS
from fer_jax.data.labels import as_nhwc as as_nhwc  # its import path before it moved to labels
from fer_jax.errors import DataError
from fer_jax.files import write_atomic

CSV_COLUMNS = ("emotion", "pixels", "Usage")


@dataclass(frozen=True)
class Split:
    """One split held in memory: uint8 images (N, 48, 48), int64 labels (N,) and, where known, each face's
    name in its source (the archive member or `fer2013.csv:<line>`)."""

    images: torch.Tensor
    labels: torch.Tensor
    names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(EMOTIONS)).tolist()

    def subset(self, n: int, seed: int = 0) -> Split:
        """A seeded random sample of `n` faces (0 or n >= len: the whole split)."""
        if not n or n >= len(self):
            return self
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        names = tuple(self.names[i] for i in index.tolist()) if self.names else ()
        return Split(self.images[index], self.labels[index], names)


@dataclass(frozen=True)
class FER2013:
    """All three splits, keyed by `SPLITS` names."""

    splits: dict[str, Split]
    source: str
    archive: str | None = None
    """The dataset file the splits were made from when `source` is a copy of it (a TFDS build): the file whose
    sha256 the data check and results record."""

    def __getitem__(self, name: str) -> Split:
        return self.splits[name]


def load_fer2013(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> FER2013:
    """Load FER-2013 from a Kaggle zip, an extracted folder or the challenge CSV.

    A zip is read in place (nothing is extracted). The decoded splits of a zip or
    CSV are cached in its content folder under `cache_dir` (None: `$FER_JAX_CACHE`
    or the user cache, see `fer_jax.data.cache`), keyed by the file's sha256: a file
    replaced under the same name is decoded afresh.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"{path}: no such file or folder (run `fer-jax download`, or pass --data PATH to a "
            "Kaggle zip, an extracted folder, or fer2013.csv)"
        )
    if path.is_dir():
        csv_path = path / "fer2013.csv"
        splits = read_challenge_csv(csv_path) if csv_path.is_file() else read_image_folder(path)
    elif path.suffix.lower() == ".csv":
        splits = _cached_splits(path, cache_dir, read_challenge_csv)
    elif zipfile.is_zipfile(path):
        splits = _cached_splits(path, cache_dir, read_zip)
    else:
        raise DataError(f"{path}: not a zip archive, a folder or a .csv file")
    for name in SPLITS:
        if len(splits[name]) == 0:
            raise DataError(f"{path}: split {name} is empty")
    return FER2013(splits, str(path))


DECODED_FILE = "splits-v1.pt"
"""The decoded splits in a content folder (the version changes when `Split`'s layout does)."""


def _cached_splits(
    path: Path, cache_dir: str | os.PathLike | None, read: Callable[[Path], dict[str, Split]]
) -> dict[str, Split]:
    """`read(path)`, or the splits decoded from the same content before (see `fer_jax.data.cache`)."""
    cached = content_folder(path, cache_dir) / DECODED_FILE
    if cached.is_file():
        try:
            return decoded_splits(torch.load(cached, weights_only=True))
        except Exception as err:  # torch.load's own errors for a truncated or foreign file, or a wrong layout
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            print(f"warning: {cached}: unreadable decoded cache ({reason}); decoding {path} again", file=sys.stderr)
    splits = read(path)
    stored = {name: {"images": s.images, "labels": s.labels, "names": list(s.names)} for name, s in splits.items()}
    write_atomic(cached, lambda handle: torch.save(stored, handle), mode="wb")
    return splits


def decoded_splits(stored: Any) -> dict[str, Split]:
    """The splits a decoded cache file holds, checked: every split, uint8 (N, 48, 48) images, int64 labels
    0-6 and a name per face; ValueError saying what is wrong otherwise."""
    if not isinstance(stored, dict) or set(stored) != set(SPLITS):
        raise ValueError(f"expected the splits {', '.join(SPLITS)}")
    splits = {}
    for name in SPLITS:
        images, labels, names = (stored[name].get(key) for key in ("images", "labels", "names"))
        if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 3):
            raise ValueError(f"{name}: images are not uint8 (N, 48, 48)")
        if tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"{name}: images are not uint8 (N, 48, 48)")
        if not (isinstance(labels, torch.Tensor) and labels.dtype == torch.int64 and labels.shape == images.shape[:1]):
            raise ValueError(f"{name}: labels are not int64, one per image")
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(EMOTIONS):
            raise ValueError(f"{name}: labels outside 0-{len(EMOTIONS) - 1}")
        if not (isinstance(names, list) and len(names) == len(labels) and all(isinstance(n, str) for n in names)):
            raise ValueError(f"{name}: not one name per face")
        splits[name] = Split(images, labels, tuple(names))
    return splits


def read_zip(archive: Path) -> dict[str, Split]:
    """Read the Kaggle layout (`<split dir>/<emotion>/<Split>_*.{jpg,png}`) straight from a zip archive."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = sorted(m for m in zf.namelist() if PurePosixPath(m).suffix.lower() in IMAGE_SUFFIXES)
            if not members:
                raise DataError(
                    f"{archive}: no .jpg/.png images inside (expected train/<emotion>/*.jpg and test/<emotion>/*.jpg)"
                )
            return _decode_files(
                str(archive), ((f"{archive}:{m}", PurePosixPath(m), lambda m=m: zf.read(m)) for m in members)
            )
    except zipfile.BadZipFile as err:
        raise DataError(f"{archive}: corrupt zip archive ({err})") from None


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _split_of(name: str, where: str) -> str:
    prefix = name.split("_", 1)[0]
    if prefix in SPLITS:
        return prefix
    raise DataError(
        f"{where}: file name does not start with Training_, PublicTest_ or PrivateTest_, so its split is unknown"
    )


def _label_of_folder(name: str, where: str) -> int:
    try:
        return EMOTIONS.index(name.lower())
    except ValueError:
        raise DataError(f"{where}: unknown emotion folder {name!r}; expected one of {', '.join(EMOTIONS)}") from None


def read_image_folder(root: Path) -> dict[str, Split]:
    """Read `<split dir>/<emotion>/<Split>_*.{jpg,png}` below `root` (the Kaggle layout)."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{root}: no .jpg/.png images found (expected train/<emotion>/*.jpg and test/<emotion>/*.jpg)")
    return _decode_files(
        str(root), ((str(path), PurePosixPath(path.relative_to(root).as_posix()), path.read_bytes) for path in files)
    )


def _decode_files(source: str, files: Iterable[tuple[str, PurePosixPath, Callable[[], bytes]]]) -> dict[str, Split]:
    """Decode `source`'s (where, path in the layout, read bytes) triples of the Kaggle layout into the splits."""
    images: dict[str, list[torch.Tensor]] = {s: [] for s in SPLITS}
    labels: dict[str, list[int]] = {s: [] for s in SPLITS}
    names: dict[str, list[str]] = {s: [] for s in SPLITS}
    converted = 0
    for where, path, read in files:
        split = _split_of(path.name, where)
        label = _label_of_folder(path.parent.name, where)
        face, was_colour = decode_face(read(), where)
        converted += was_colour
        images[split].append(face)
        labels[split].append(label)
        names[split].append(path.as_posix())
    if converted:
        warnings.warn(f"{source}: converted {converted} colour image(s) to grayscale", stacklevel=3)
    return {s: _stack(images[s], labels[s], names[s]) for s in SPLITS}


def decode_face(data: bytes, name: str) -> tuple[torch.Tensor, bool]:
    """Decode one 48x48 face to a (48, 48) uint8 tensor; colour is converted to gray.

    Returns the face and whether it was converted. Other sizes are rejected:
    resizing would silently change what the model sees.
    """
    try:
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
    except (RuntimeError, ValueError) as err:
        # torchvision's decoder messages start with its own source path ("decode_jpeg, /__w/vision/...cpp:171,
        # Image is incomplete or truncated"): keep the part that is about the file.
        reason = str(err).splitlines()[0].split(", ")[-1] if str(err) else type(err).__name__
        raise DataError(f"{name}: not a readable image ({reason})") from None
    if image.dtype != torch.uint8:
        raise DataError(f"{name}: {image.dtype} pixels; expected 8-bit images")
    channels = image.shape[0]
    if channels in (3, 4):
        image = v2.functional.rgb_to_grayscale(image[:3])
    elif channels == 2:
        image = image[:1]
    if tuple(image.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{name}: image is {image.shape[2]}x{image.shape[1]}; FER-2013 faces are 48x48")
    return image[0], channels != 1 and channels != 2


def read_challenge_csv(path: Path) -> dict[str, Split]:
    """Read the challenge's `fer2013.csv` (`emotion,pixels,Usage`; 2304 pixels per row); a one-line DataError
    naming the file (and line) when it is not such a text file."""
    try:
        return _read_challenge_csv(path)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a text CSV file (byte {err.start} is not UTF-8)") from None
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from None


def _read_challenge_csv(path: Path) -> dict[str, Split]:
    images: dict[str, list[torch.Tensor]] = {s: [] for s in SPLITS}
    labels: dict[str, list[int]] = {s: [] for s in SPLITS}
    names: dict[str, list[str]] = {s: [] for s in SPLITS}
    expected = IMAGE_SIZE * IMAGE_SIZE
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if not set(CSV_COLUMNS) <= set(columns):
            raise DataError(f"{path}: expected columns {','.join(CSV_COLUMNS)}, found {','.join(columns) or 'none'}")
        for row in reader:
            where = f"{path} line {reader.line_num}"
            emotion, usage = row["emotion"], row["Usage"]
            if not emotion.isdigit() or int(emotion) >= len(EMOTIONS):
                raise DataError(f"{where}: unknown emotion label {emotion!r}; expected 0-{len(EMOTIONS) - 1}")
            if usage not in SPLITS:
                raise DataError(f"{where}: unknown Usage {usage!r}; expected one of {', '.join(SPLITS)}")
            try:
                pixels = bytes(int(v) for v in (row["pixels"] or "").split())
            except ValueError:
                raise DataError(f"{where}: pixels must be integers 0-255") from None
            if len(pixels) != expected:
                raise DataError(f"{where}: {len(pixels)} pixel values, expected {expected}")
            images[usage].append(torch.frombuffer(bytearray(pixels), dtype=torch.uint8).view(IMAGE_SIZE, IMAGE_SIZE))
            labels[usage].append(int(emotion))
            names[usage].append(f"{path.name}:{reader.line_num}")
    return {s: _stack(images[s], labels[s], names[s]) for s in SPLITS}


def _stack(images: list[torch.Tensor], labels: list[int], names: list[str]) -> Split:
    if not images:
        return Split(torch.empty(0, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8), torch.empty(0, dtype=torch.int64))
    return Split(torch.stack(images), torch.tensor(labels, dtype=torch.int64), tuple(names))


EDGE_PAD = IMAGE_SIZE // 2
"""With data.fill='edge', faces are edge-padded by this much before the affine transform and cropped back after."""


def train_transform(config: DataConfig) -> v2.Transform:
    """The seed's augmentation: random rotation, zoom (and shift) and horizontal flip, then random erasing
    if `config.erasing` (uint8 in, uint8 out). `fer_jax.data.augment` is the same on the device.

    torchvision fills with a constant only, so `fill='edge'` pads each face with its border pixels
    (`EDGE_PAD`), transforms the padded face about the same centre and crops the middle back out;
    the shift fraction is halved to stay the same number of pixels.
    """
    check_choice("data.interpolation", config.interpolation, INTERPOLATIONS)
    check_choice("data.fill", config.fill, FILLS)
    steps: list[v2.Transform] = []
    if config.rotation_degrees or config.zoom or config.translate:
        edge = config.fill == "edge"
        size_ratio = IMAGE_SIZE / (IMAGE_SIZE + 2 * EDGE_PAD) if edge else 1.0
        translate = config.translate * size_ratio
        affine = v2.RandomAffine(
            degrees=config.rotation_degrees,
            scale=(1 - config.zoom, 1 + config.zoom),
            translate=(translate, translate) if translate else None,
            interpolation=v2.InterpolationMode(config.interpolation),
        )
        steps.extend([v2.Pad(EDGE_PAD, padding_mode="edge"), affine, v2.CenterCrop(IMAGE_SIZE)] if edge else [affine])
    if config.horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    if config.erasing:
        steps.append(v2.RandomErasing(p=config.erasing, scale=ERASING_SCALE, ratio=ERASING_RATIO, value=0))
    return v2.Compose(steps)


class FaceDataset(Dataset):
    """Faces as (1, 48, 48) float32 tensors in [0, 1] with int64 labels."""

    def __init__(self, split: Split, transform: v2.Transform | None = None) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.split.images[index].unsqueeze(0)
        if self.transform is not None:
            image = self.transform(image)
        return image.float().div_(255.0), self.split.labels[index]


def torch_train_batches(
    split: Split, config: DataConfig, batch_size: int, seed: int, epoch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled, augmented (N, 1, 48, 48) float batches (the last partial batch dropped).

    Order and augmentation depend only on (seed, epoch), so a resumed run
    replays an epoch exactly, and the JAX and PyTorch trainers see the same
    batches.
    """
    epoch_seed = seed * 100_003 + epoch
    torch.manual_seed(epoch_seed)
    generator = torch.Generator().manual_seed(epoch_seed)
    dataset = FaceDataset(split, train_transform(config) if config.augment else None)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        generator=generator,
        num_workers=config.num_workers,
    )
    batches = iter(loader)
    while True:
        with torch_threads(1):
            batch = next(batches, None)
        if batch is None:
            return
        yield batch


def train_batches(
    split: Split, config: DataConfig, batch_size: int, seed: int, epoch: int
) -> Iterator[tuple[jax.Array, jax.Array]]:
    """`torch_train_batches` handed to JAX by DLPack."""
    for images, labels in torch_train_batches(split, config, batch_size, seed, epoch):
        yield to_jax(images), to_jax(labels)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run torch with `count` intra-op threads, then restore the previous number.

    Per-image transforms on 48x48 tensors run about 25x slower with two
    threads than with one here (thread start-up dominates), and the JAX step
    has its own thread pool; a PyTorch train step in the same process keeps
    all its threads.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def torch_eval_batches(split: Split, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Unaugmented batches in order, the last one zero-padded to `batch_size`; yields (images, labels, mask)."""
    for start in range(0, len(split), batch_size):
        images = split.images[start : start + batch_size].unsqueeze(1).float().div_(255.0)
        labels = split.labels[start : start + batch_size]
        count = len(labels)
        pad = batch_size - count
        if pad:
            images = torch.cat([images, images.new_zeros((pad, *images.shape[1:]))])
            labels = torch.cat([labels, labels.new_zeros(pad)])
        yield images, labels, torch.arange(batch_size) < count


def eval_batches(split: Split, batch_size: int) -> Iterator[tuple[jax.Array, jax.Array, jax.Array]]:
    """`torch_eval_batches` handed to JAX by DLPack (a fixed shape: one compilation)."""
    for batch in torch_eval_batches(split, batch_size):
        yield tuple(to_jax(t) for t in batch)


def to_jax(tensor: torch.Tensor) -> jax.Array:
    """Hand a CPU tensor to JAX without a copy (DLPack), then onto the default device.

    `from_dlpack` commits the array to the CPU; on a GPU `device_put` makes the
    one host-to-device copy that any input path needs.
    """
    array = jax.dlpack.from_dlpack(tensor.contiguous())
    device = jax.local_devices()[0]
    return array if device.platform == "cpu" else jax.device_put(array, device)
