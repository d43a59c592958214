"""FER-2013 as a TensorFlow Datasets builder: built and read back without TensorFlow (never skipped)."""

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter

import jax.numpy as jnp
import pytest
import tensorflow_datasets as tfds  # the test environment (make test) installs the 'tfds' extra
import torch

from fer_jax.config import Config
from fer_jax.data.cache import SOURCE_RECORD, CacheError, file_sha256
from fer_jax.data.check import check_source
from fer_jax.data.fer2013 import EMOTIONS, SPLITS, load_fer2013
from fer_jax.data.tfds_builder import TFDS_SPLITS, build_fer2013_tfds, load_tfds_splits, main
from fer_jax.train.evaluation import load_dataset, load_splits
from tests.conftest import SMALL
from tests.fixtures import make_faces, write_zip


def faces(images, labels) -> Counter:
    """The multiset of (pixels, label) pairs of a split."""
    return Counter((bytes(image.flatten().tolist()), int(label)) for image, label in zip(images, labels))


@pytest.fixture(scope="module")
def built(tiny_zip, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    return build_fer2013_tfds(tiny_zip, data_dir), data_dir


@pytest.fixture(scope="module")
def reference(tiny_zip, tmp_path_factory):
    return load_fer2013(tiny_zip, tmp_path_factory.mktemp("cache"))


def test_tensorflow_is_not_installed():
    # Everything in this file runs without TensorFlow: that is what it proves.
    assert importlib.util.find_spec("tensorflow") is None
    with pytest.raises(ImportError):
        import tensorflow  # noqa: F401


def test_builder_info(built):
    builder, _ = built
    info = builder.info
    assert (builder.name, str(builder.version)) == ("fer2013", "1.0.0")
    assert "1.0.0" in builder.RELEASE_NOTES
    assert "Challenges in Representation Learning" in info.citation and "Goodfellow" in info.citation
    assert info.description
    assert str(info.file_format.value) == "array_record"
    image, label = info.features["image"], info.features["label"]
    assert isinstance(image, tfds.features.Tensor)
    assert (image.shape, jnp.dtype(image.np_dtype).name) == ((48, 48, 1), "uint8")
    assert isinstance(label, tfds.features.ClassLabel)
    assert (label.names, jnp.dtype(label.np_dtype).name) == (list(EMOTIONS), "int64")
    assert info.supervised_keys == ("image", "label")


def test_split_sizes_and_faces_match_the_torchvision_loader(built, reference):
    builder, _ = built
    assert {name: builder.info.splits[name].num_examples for name in ("train", "validation", "test")} == {
        "train": SMALL["Training"] * 7,
        "validation": SMALL["PublicTest"] * 7,
        "test": SMALL["PrivateTest"] * 7,
    }
    sources = builder.as_data_source()
    for name in SPLITS:
        source = sources[TFDS_SPLITS[name]]
        examples = list(source)
        assert all(e["image"].shape == (48, 48, 1) and str(e["image"].dtype) == "uint8" for e in examples)
        assert faces([torch.as_tensor(e["image"])[..., 0] for e in examples], [e["label"] for e in examples]) == faces(
            reference[name].images, reference[name].labels
        ), name


def test_tfds_data_source_reads_random_access(built, reference):
    _, data_dir = built
    sources = tfds.data_source("fer2013", data_dir=data_dir, download=False)
    test = sources["test"]
    assert len(test) == len(reference["PrivateTest"])
    last = test[len(test) - 1]  # random access, no iteration
    assert torch.equal(torch.as_tensor(last["image"])[..., 0], reference["PrivateTest"].images[-1])
    assert last["label"] == reference["PrivateTest"].labels[-1]


def test_read_without_our_code(built):
    # A fresh interpreter that never imports fer_jax reads the files with TFDS alone.
    _, data_dir = built
    script = (
        "import sys, tensorflow_datasets as tfds; "
        f"ds = tfds.data_source('fer2013', data_dir={str(data_dir)!r}, download=False); "
        "assert 'fer_jax' not in sys.modules and 'tensorflow' not in sys.modules; "
        "print(len(ds['train']), ds['train'][0]['image'].shape)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == str(SMALL["Training"] * 7)


def test_load_tfds_splits_gives_the_same_splits(built, reference):
    _, data_dir = built
    splits = load_tfds_splits(data_dir)
    for name in SPLITS:
        split = splits[name]
        assert (split.images.dtype, split.labels.dtype) == (torch.uint8, torch.int64)
        assert split.images.shape == reference[name].images.shape
        # Shuffling is disabled when writing: same order as load_fer2013, not just the same faces.
        assert torch.equal(split.images, reference[name].images), name
        assert torch.equal(split.labels, reference[name].labels), name


def test_config_loader_tfds_matches_torchvision(tiny_zip, tmp_path):
    def splits(loader):
        config = Config()
        config.apply_overrides(
            [
                f"data.source={tiny_zip}",
                f"data.cache_dir={tmp_path / 'cache'}",
                f"data.loader={loader}",
                "data.train_limit=20",
            ]
        )
        return load_splits(config)

    tfds_splits = splits("tfds")  # built on first use, in tfds/ of the archive's content folder
    content = tmp_path / "cache" / f"fer2013-{file_sha256(tiny_zip)[:16]}"
    assert (content / "tfds" / "fer2013" / "1.0.0" / "dataset_info.json").is_file()
    torchvision_splits = splits("torchvision")
    for name in SPLITS:
        assert len(tfds_splits[name]) == len(torchvision_splits[name])
        assert torch.equal(tfds_splits[name].labels, torchvision_splits[name].labels), name
        assert torch.equal(tfds_splits[name].images, torchvision_splits[name].images), name


def test_a_built_copy_is_used_only_for_the_archive_that_built_it(built, tiny_zip, tmp_path):
    """Keyed by the archive's sha256: the build records it in source.json; another archive (same name, other
    bytes), or a copy without a record outside the archive's own cache folder, is refused in one line."""
    _, data_dir = built
    assert json.loads((data_dir / SOURCE_RECORD).read_text())["sha256"] == file_sha256(tiny_zip)
    assert len(load_tfds_splits(data_dir, tiny_zip)["Training"]) == SMALL["Training"] * 7
    other = write_zip(make_faces(SMALL, seed=1), tmp_path / "fer2013.zip")
    with pytest.raises(CacheError, match=f"TFDS copy of the archive with sha256 {file_sha256(tiny_zip)[:16]}"):
        load_tfds_splits(data_dir, other)
    unrecorded = tmp_path / "unrecorded"
    shutil.copytree(data_dir, unrecorded)
    (unrecorded / SOURCE_RECORD).unlink()
    with pytest.raises(CacheError, match="sha256 None"):
        load_tfds_splits(unrecorded, tiny_zip)


def test_a_tfds_run_records_the_archive_sha256(tiny_zip, tmp_path):
    """Every results JSON names the archive it read, whichever loader: the TFDS dataset carries its archive, and
    the data check (what results.json's dataset_sha256 is read from) records its sha256."""
    config = Config()
    config.apply_overrides([f"data.source={tiny_zip}", f"data.cache_dir={tmp_path / 'cache'}", "data.loader=tfds"])
    dataset = load_dataset(config)
    assert dataset.archive == str(tiny_zip)
    assert check_source(dataset, config.data.cache_dir)["dataset_sha256"] == file_sha256(tiny_zip)


def test_cli_builds_and_prints_split_sizes(tiny_zip, tmp_path, capsys):
    assert main(["--data", str(tiny_zip), "--data-dir", str(tmp_path / "tfds")]) == 0
    out = capsys.readouterr().out
    for name, count in (("train", 28), ("validation", 14), ("test", 14)):
        assert f"{name}: {count} examples" in out


@pytest.mark.slow
def test_cli_help_and_missing_data(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "fer_jax.data.tfds_builder", "--help"], capture_output=True, text=True, check=True
    )
    assert "--data" in out.stdout and "--data-dir" in out.stdout
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(tmp_path / "missing.zip"), "--data-dir", str(tmp_path / "tfds")])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:  # no --data and an empty manual folder
        main(["--data-dir", str(tmp_path / "tfds")])
    assert exit_info.value.code == 2
    with pytest.raises(Exception, match="no built TFDS copy"):
        load_tfds_splits(tmp_path / "empty")


def test_manual_dir_holding_the_zip(tiny_zip, tmp_path, monkeypatch):
    # The TFDS convention: no source given, the Kaggle zip sits in <data_dir>/downloads/manual.
    manual = tmp_path / "tfds" / "downloads" / "manual"
    manual.mkdir(parents=True)
    (manual / "fer2013.zip").write_bytes(tiny_zip.read_bytes())
    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    builder = build_fer2013_tfds(None, tmp_path / "tfds")
    assert builder.info.splits["train"].num_examples == SMALL["Training"] * 7
    assert list(system_temp.iterdir()) == []  # a build leaves no temporary folder behind


@pytest.mark.real_data
def test_real_archive_split_sizes(fer2013_zip, tmp_path):
    builder = build_fer2013_tfds(fer2013_zip, tmp_path / "tfds")
    assert {name: info.num_examples for name, info in builder.info.splits.items()} == {
        "train": 28709,
        "validation": 3589,
        "test": 3589,
    }
    test = builder.as_data_source()["test"]
    assert len(test) == 3589 and test[3588]["image"].shape == (48, 48, 1)
