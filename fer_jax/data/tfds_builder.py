"""FER-2013 as a TensorFlow Datasets builder that builds and reads without TensorFlow.

The builder reads its source with `fer_jax.data.fer2013.load_fer2013` (the project's one
parser, so every layout it knows works here too) and writes ArrayRecord files,
which `tfds.data_source(...)` / `builder.as_data_source()` read with random
access and no TensorFlow. The image is a `tfds.features.Tensor` rather than an
`Image` feature: encoding an `Image` needs TensorFlow.

TFDS splits: `train` (Training), `validation` (PublicTest), `test` (PrivateTest).
Examples keep the order of `load_fer2013` (shuffling is disabled when writing),
so `load_tfds_splits` returns the same tensors as the torchvision loader.

    python -m fer_jax.data.tfds_builder --data data/fer2013.zip --data-dir data/tfds
"""

from __future__ import annotations

import argparse
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import tensorflow_datasets as tfds
import torch

from fer_jax.data.cache import check_source, file_sha256, record_source, recorded_sha256
from fer_jax.data.fer2013 import EMOTIONS, IMAGE_SIZE, SPLITS, DataError, Split, load_fer2013
from fer_jax.files import FileFormatError

NAME = "fer2013"
TFDS_SPLITS = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
"""Project split name -> TFDS split name."""

_DESCRIPTION = """\
FER-2013: 35,887 grayscale 48x48 faces, each labelled with one of seven
expressions (angry, disgust, fear, happy, sad, surprise, neutral; the label
order of the 2013 challenge CSV). Splits follow the challenge: `train`
(Training, 28,709), `validation` (PublicTest, 3,589; for model selection) and
`test` (PrivateTest, 3,589; the number to report).

Built from a manually downloaded copy: the Kaggle archive `msambare/fer2013`
(zip or extracted folder) or the challenge file `fer2013.csv`.
"""

_CITATION = """\
@inproceedings{goodfellow2013challenges,
  title     = {Challenges in Representation Learning: A report on three machine learning contests},
  author    = {Goodfellow, Ian J. and Erhan, Dumitru and Carrier, Pierre Luc and Courville, Aaron and
               Mirza, Mehdi and Hamner, Ben and Cukierski, Will and Tang, Yichuan and Thaler, David and
               Lee, Dong-Hyun and Zhou, Yingbo and Ramaiah, Chetan and Feng, Fangxiang and Li, Ruifan and
               Wang, Xiaojie and Athanasakis, Dimitris and Shawe-Taylor, John and Milakov, Maxim and
               Park, John and Ionescu, Radu and Popescu, Marius and Grozea, Cristian and Bergstra, James and
               Xie, Jingjing and Romaszko, Lukasz and Xu, Bing and Chuang, Zhang and Bengio, Yoshua},
  booktitle = {Neural Information Processing (ICONIP 2013)},
  series    = {Lecture Notes in Computer Science},
  volume    = {8228},
  pages     = {117--124},
  publisher = {Springer},
  year      = {2013},
  note      = {arXiv:1307.0414}
}
"""

_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Pass the path (`python -m fer_jax.data.tfds_builder --data PATH --data-dir DIR`,
`build_fer2013_tfds(PATH, DIR)`), or put one of these in the manual folder
(default `<data_dir>/downloads/manual`):
- the Kaggle archive msambare/fer2013 (`fer2013.zip` or `archive.zip`; `fer-jax download` fetches it),
- that archive extracted (`train/<emotion>/*.jpg`, `test/<emotion>/*.jpg`),
- the challenge file `fer2013.csv`.
"""


class _LocalDatasetInfo(tfds.core.DatasetInfo):
    """FER-2013's DatasetInfo: a local build, never in TFDS's GCS bucket.

    TFDS looks a new builder's info up in its bucket, and makes a temporary
    folder for it before finding GCS off: each build left an empty
    `/tmp/tmp*tfds` behind. There is nothing to look up, so nothing is made.
    """

    def initialize_from_bucket(self) -> None:
        return None


class Fer2013(tfds.core.GeneratorBasedBuilder, skip_registration=__name__ == "__main__"):
    """FER-2013 from a Kaggle zip, an extracted folder or fer2013.csv (via `fer_jax.data.fer2013.load_fer2013`).

    `source`: the dataset path; when None, the manual folder is used (a Kaggle
    zip inside it, the extracted archive, or a folder holding fer2013.csv).
    `cache_dir`: the cache root of `load_fer2013` (None: its default). Neither
    is needed to read a built dataset.
    """

    name = NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: uint8 (48, 48, 1) images, labels in the challenge order, "
        "splits train/validation/test = Training/PublicTest/PrivateTest, ArrayRecord files.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS

    def __init__(
        self, *, source: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)
        self._source = None if source is None else Path(source).expanduser()
        self._cache_dir = None if cache_dir is None else Path(cache_dir).expanduser()
        # Pickling rebuilds the builder from `_original_state`: keep our arguments there too.
        self._original_state.update(source=source, cache_dir=cache_dir, file_format=kwargs["file_format"])

    def _info(self) -> tfds.core.DatasetInfo:
        return _LocalDatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    # A NumPy dtype object from jax.numpy: the package never imports numpy itself.
                    "image": tfds.features.Tensor(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), dtype=jnp.dtype("uint8")),
                    "label": tfds.features.ClassLabel(names=list(EMOTIONS)),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            homepage="https://www.kaggle.com/datasets/msambare/fer2013",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        source = self._source if self._source is not None else _source_in(Path(dl_manager.manual_dir))
        dataset = load_fer2013(source, self._cache_dir)
        return {TFDS_SPLITS[name]: self._generate_examples(dataset[name]) for name in SPLITS}

    def _generate_examples(self, split: Split) -> Iterator[tuple[int, dict[str, Any]]]:
        # Integer keys: with shuffling disabled, the examples are written in key order.
        for index in range(len(split)):
            yield index, {"image": split.images[index].unsqueeze(-1).numpy(), "label": int(split.labels[index])}


def _source_in(folder: Path) -> Path:
    """The dataset inside a manual folder: a folder with fer2013.csv or images as is, else its one Kaggle zip."""
    if (folder / "fer2013.csv").is_file() or (folder / "train").is_dir() or (folder / "test").is_dir():
        return folder
    zips = sorted(p for p in folder.iterdir() if p.is_file() and zipfile.is_zipfile(p))
    for preferred in ("fer2013.zip", "archive.zip"):
        if folder / preferred in zips:
            return folder / preferred
    if len(zips) == 1:
        return zips[0]
    if zips:
        raise DataError(
            f"{folder}: several zip archives ({', '.join(p.name for p in zips)}); "
            "name the FER-2013 one fer2013.zip or pass its path as the source"
        )
    return folder  # let load_fer2013 look for images and say what is missing


def build_fer2013_tfds(
    source: str | os.PathLike | None, data_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> Fer2013:
    """Build the TFDS copy of FER-2013 in `data_dir` (a no-op if it is already there) and return its builder.

    `source`: a Kaggle zip, an extracted folder or fer2013.csv; None: read the
    manual folder `<data_dir>/downloads/manual`. `cache_dir`: the cache root
    of `load_fer2013` (None: its default).
    """
    builder = Fer2013(data_dir=os.fspath(data_dir), source=source, cache_dir=cache_dir)
    if not _is_built(builder):
        if source is not None and not Path(source).expanduser().exists():
            raise DataError(
                f"{source}: no such file or folder (pass a Kaggle zip, an extracted folder, or fer2013.csv)"
            )
        manual = Path(data_dir) / "downloads" / "manual"
        if source is None and not (manual.is_dir() and any(manual.iterdir())):
            raise DataError(
                f"{manual}: empty or missing, and no source given (pass a Kaggle zip, an extracted "
                "folder or fer2013.csv, or put one in that folder)"
            )
        builder.download_and_prepare(file_format="array_record")
        if source is not None and Path(source).expanduser().is_file():
            record_source(Path(data_dir), Path(source).expanduser())
    return builder


def load_tfds_splits(
    data_dir: str | os.PathLike, source: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> dict[str, Split]:
    """The three splits from the TFDS copy in `data_dir`, keyed like `load_fer2013` (Training, ...).

    The copy is built first from `source` when it is missing. Images come back
    as uint8 (N, 48, 48) and labels as int64 (N,), in the order of `load_fer2013`.
    """
    builder = Fer2013(data_dir=os.fspath(data_dir))
    if not _is_built(builder):
        if source is None:
            raise DataError(
                f"{data_dir}: no built TFDS copy of FER-2013 here, and no source to build it from "
                "(pass the Kaggle zip, extracted folder or fer2013.csv)"
            )
        builder = build_fer2013_tfds(source, data_dir, cache_dir)
    elif source is not None and Path(source).expanduser().is_file():
        check_built_from(Path(data_dir), Path(source).expanduser())
    sources = builder.as_data_source()
    return {name: _read_split(sources[tfds_name]) for name, tfds_name in TFDS_SPLITS.items()}


def check_built_from(data_dir: Path, source: Path) -> None:
    """Refuse (`CacheError`) a built copy in `data_dir` unless its source.json names `source`'s sha256. A copy
    without one, built before copies recorded their archive, passes in the default folder inside the archive's
    own cache folder (whose source.json names it), and gets its record."""
    if recorded_sha256(data_dir) is None and recorded_sha256(data_dir.parent) == file_sha256(source):
        record_source(data_dir, source)
    check_source(data_dir, source, "TFDS copy")


def _is_built(builder: Fer2013) -> bool:
    # TFDS writes into an `incomplete.*` folder renamed into place at the end, so the
    # version folder's dataset_info.json marks a finished build. (`builder.is_prepared()`
    # says the same but logs a warning whenever the answer is no.)
    return (Path(builder.data_dir) / "dataset_info.json").is_file()


def _read_split(source: Any, chunk: int = 4096) -> Split:
    """Every example of one data source, as a `Split` (TFDS gives NumPy arrays; torch takes them as they are)."""
    images, labels = [], []
    for start in range(0, len(source), chunk):
        examples = source.__getitems__(list(range(start, min(start + chunk, len(source)))))
        images += [torch.as_tensor(example["image"]) for example in examples]
        labels += [int(example["label"]) for example in examples]
    if not images:
        return Split(torch.empty(0, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8), torch.empty(0, dtype=torch.int64))
    return Split(torch.stack(images).reshape(-1, IMAGE_SIZE, IMAGE_SIZE), torch.tensor(labels, dtype=torch.int64))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fer_jax.data.tfds_builder",
        description="Build FER-2013 as a TensorFlow Datasets dataset (ArrayRecord files; TensorFlow not needed) "
        "and print its split sizes. Read it with tfds.data_source('fer2013', data_dir=DIR).",
    )
    parser.add_argument(
        "--data",
        metavar="PATH",
        help="Kaggle zip, extracted folder or fer2013.csv (default: the manual folder DIR/downloads/manual)",
    )
    parser.add_argument("--data-dir", metavar="DIR", required=True, help="TFDS data folder to write (and read)")
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache root for the decoded archive (default: $FER_JAX_CACHE, else the user cache folder)",
    )
    args = parser.parse_args(argv)
    try:
        builder = build_fer2013_tfds(args.data, args.data_dir, args.cache_dir)
    except (DataError, FileFormatError) as err:
        parser.exit(2, f"error: {err}\n")
    print(f"{builder.name} {builder.version} in {builder.data_dir}")
    for name, info in builder.info.splits.items():
        print(f"{name}: {info.num_examples} examples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
