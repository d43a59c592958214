"""Loaders, label order, the content-keyed cache, clear errors and the torch -> JAX hand-off."""

import json
import sys

import jax
import pytest
import torch
from torchvision.io import encode_png

from fer_jax.config import Config, DataConfig
from fer_jax.data import fer2013 as data_module
from fer_jax.data.cache import cache_root, default_cache_root, file_sha256
from fer_jax.data.fer2013 import (
    DECODED_FILE,
    EMOTIONS,
    SPLITS,
    DataError,
    Split,
    decode_face,
    eval_batches,
    load_fer2013,
    read_challenge_csv,
    read_image_folder,
    to_jax,
    torch_train_batches,
)
from fer_jax.files import WriteError
from fer_jax.train.evaluation import load_splits
from tests.conftest import SMALL
from tests.fixtures import Face, encode, make_faces, member_path, write_csv, write_folder, write_zip


def test_challenge_label_order():
    assert EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def test_folder_and_csv_give_each_face_the_same_label(tmp_path):
    """The folder's alphabetical classes (neutral before sad) must be remapped by name."""
    faces = make_faces({"Training": 2, "PublicTest": 1, "PrivateTest": 1})
    from_folder = read_image_folder(write_folder(faces, tmp_path / "folder", fmt="png"))
    from_csv = read_challenge_csv(write_csv(faces, tmp_path / "fer2013.csv"))
    for split in SPLITS:
        folder_labels = {
            bytes(img.flatten().tolist()): int(lab)
            for img, lab in zip(from_folder[split].images, from_folder[split].labels)
        }
        csv_labels = {
            bytes(img.flatten().tolist()): int(lab) for img, lab in zip(from_csv[split].images, from_csv[split].labels)
        }
        assert folder_labels == csv_labels
        assert len(folder_labels) == 7 * (2 if split == "Training" else 1)
    sad_face = next(f for f in faces if EMOTIONS[f.label] == "sad")
    assert folder_labels_of(from_folder, sad_face) == EMOTIONS.index("sad") == 4


def folder_labels_of(splits: dict[str, Split], face: Face) -> int:
    split = splits[face.split]
    index = next(i for i, img in enumerate(split.images) if torch.equal(img, face.pixels))
    return int(split.labels[index])


def test_zip_loads_all_splits_and_counts(tiny_zip, tmp_path):
    data = load_fer2013(tiny_zip, tmp_path / "cache")
    for split in SPLITS:
        assert data[split].class_counts() == [SMALL[split]] * 7
        assert data[split].images.dtype == torch.uint8 and data[split].images.shape[1:] == (48, 48)
        assert len(data[split].names) == len(data[split]) and data[split].names[0].endswith(".jpg")
    (folder,) = (tmp_path / "cache").iterdir()  # nothing extracted: one content folder with the decoded splits
    assert folder.name == f"fer2013-{file_sha256(tiny_zip)[:16]}"
    assert json.loads((folder / "source.json").read_text())["sha256"] == file_sha256(tiny_zip)
    assert sorted(p.name for p in folder.iterdir()) == ["source.json", DECODED_FILE]


def test_a_replaced_archive_of_the_same_name_is_loaded_afresh(tmp_path):
    """The trap of the blurred copy: a new zip under the old name must never be served from the old cache."""
    archive = tmp_path / "fer2013.zip"
    first = make_faces(SMALL, seed=1)
    write_zip(first, archive)
    assert torch.equal(load_fer2013(archive, tmp_path / "cache")["Training"].images[0], training_pixels(first)[0])
    second = make_faces(SMALL, seed=2)
    write_zip(second, archive)
    reloaded = load_fer2013(archive, tmp_path / "cache")["Training"].images
    assert torch.equal(reloaded[0], training_pixels(second)[0])
    assert not torch.equal(reloaded[0], training_pixels(first)[0])
    assert len(list((tmp_path / "cache").iterdir())) == 2


def training_pixels(faces: list[Face]) -> list[torch.Tensor]:
    """The Training faces in the loader's order (sorted by member path)."""
    training = sorted((f for f in faces if f.split == "Training"), key=lambda f: member_path(f, "jpg"))
    return [decode_face(encode(f, "jpg"), f.name)[0] for f in training]


def test_the_default_cache_is_one_absolute_folder_shared_by_every_working_directory(tiny_zip, tmp_path, monkeypatch):
    monkeypatch.setenv("FER_JAX_CACHE", str(tmp_path / "shared-cache"))
    config = Config()
    config.data.source = str(tiny_zip)
    first_cwd, second_cwd = tmp_path / "a", tmp_path / "b"
    first_cwd.mkdir(), second_cwd.mkdir()
    monkeypatch.chdir(first_cwd)
    assert cache_root(config.data.cache_dir) == tmp_path / "shared-cache"
    load_splits(config)

    def must_not_decode(path):
        raise AssertionError(f"decoded {path} again instead of reusing the cache")

    monkeypatch.chdir(second_cwd)
    monkeypatch.setattr(data_module, "read_zip", must_not_decode)
    assert len(load_splits(config)["PrivateTest"]) == 7 * SMALL["PrivateTest"]
    assert list(first_cwd.iterdir()) == list(second_cwd.iterdir()) == []


def test_user_cache_folder_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("FER_JAX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(sys, "platform", "linux")
    assert default_cache_root() == tmp_path / "xdg" / "fer-jax"


def test_an_interrupted_cache_write_never_counts_as_done(tiny_zip, tmp_path, monkeypatch):
    def crash(obj, handle):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(WriteError, match=r"splits-v1.pt: disk full$"):  # one line, exit 2 from the CLI
        load_fer2013(tiny_zip, tmp_path)
    (folder,) = tmp_path.iterdir()
    assert [p.name for p in folder.iterdir()] == ["source.json"]
    monkeypatch.undo()
    assert len(load_fer2013(tiny_zip, tmp_path)["Training"]) == 7 * SMALL["Training"]
    assert (folder / DECODED_FILE).is_file()


def test_csv_is_cached_by_content_too(tmp_path):
    path = write_csv(make_faces(SMALL), tmp_path / "fer2013.csv")
    first = load_fer2013(path, tmp_path / "cache")
    (folder,) = (tmp_path / "cache").iterdir()
    assert (folder / DECODED_FILE).is_file() and first["PublicTest"].names[0].startswith("fer2013.csv:")
    assert torch.equal(load_fer2013(path, tmp_path / "cache")["Training"].images, first["Training"].images)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_path_and_not_a_zip(tmp_path):
    with pytest.raises(DataError) as info:
        load_fer2013(tmp_path / "nope.zip")
    assert "nope.zip" in one_line(info) and "fer-jax download" in one_line(info)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(DataError) as info:
        load_fer2013(junk)
    assert "junk.bin" in one_line(info)


def folder_with(tmp_path, name: str, data: bytes):
    faces = make_faces({"Training": 1, "PublicTest": 1, "PrivateTest": 1})
    root = write_folder(faces, tmp_path / "folder")
    (root / "train" / "happy" / name).write_bytes(data)
    return root


def test_corrupt_image_names_the_file(tmp_path):
    root = folder_with(tmp_path, "Training_broken.jpg", b"\xff\xd8\xff garbage")
    with pytest.raises(DataError) as info:
        read_image_folder(root)
    assert "Training_broken.jpg" in one_line(info) and "not a readable image" in one_line(info)


def test_wrong_size_is_rejected(tmp_path):
    root = folder_with(
        tmp_path, "Training_big.png", bytes(encode_png(torch.zeros(1, 64, 64, dtype=torch.uint8)).tolist())
    )
    with pytest.raises(DataError) as info:
        read_image_folder(root)
    assert "Training_big.png" in one_line(info) and "64x64" in one_line(info)


def test_colour_is_converted_to_gray(tmp_path):
    colour = torch.zeros(3, 48, 48, dtype=torch.uint8)
    colour[0] = 255
    root = folder_with(tmp_path, "Training_colour.png", bytes(encode_png(colour).tolist()))
    with pytest.warns(UserWarning, match="converted 1 colour"):
        splits = read_image_folder(root)
    assert len(splits["Training"]) == 8
    uniform = [img for img in splits["Training"].images if img.min() == img.max()]
    assert len(uniform) == 1 and abs(int(uniform[0][0, 0]) - round(0.2989 * 255)) <= 1


def test_unknown_split_prefix_and_class_folder(tmp_path):
    root = folder_with(tmp_path, "face.png", bytes(encode_png(torch.zeros(1, 48, 48, dtype=torch.uint8)).tolist()))
    with pytest.raises(DataError, match="face.png.*split is unknown"):
        read_image_folder(root)
    root2 = tmp_path / "f2"
    write_folder(make_faces({"Training": 1, "PublicTest": 1, "PrivateTest": 1}), root2)
    (root2 / "train" / "happy").rename(root2 / "train" / "joy")
    with pytest.raises(DataError, match="unknown emotion folder 'joy'"):
        read_image_folder(root2)


def csv_with(tmp_path, text: str):
    path = tmp_path / "fer2013.csv"
    path.write_text(text)
    return path


PIXELS = " ".join(["7"] * 2304)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("label,pixels,Usage\n", "expected columns emotion,pixels,Usage"),
        (f"emotion,pixels,Usage\n3,{' '.join(['7'] * 2303)},Training\n", "line 2: 2303 pixel values, expected 2304"),
        (f"emotion,pixels,Usage\n9,{PIXELS},Training\n", "line 2: unknown emotion label '9'"),
        (f"emotion,pixels,Usage\n3,{PIXELS},Validation\n", "line 2: unknown Usage 'Validation'"),
        ("emotion,pixels,Usage\n3,1 2 x,Training\n", "line 2: pixels must be integers 0-255"),
        ("emotion,pixels,Usage\n3,1 2 300,Training\n", "line 2: pixels must be integers 0-255"),
    ],
)
def test_bad_csv_rows_are_named(tmp_path, text, expected):
    with pytest.raises(DataError) as info:
        read_challenge_csv(csv_with(tmp_path, text))
    assert expected in one_line(info) and "fer2013.csv" in one_line(info)


def test_empty_split_is_an_error(tmp_path):
    path = csv_with(tmp_path, f"emotion,pixels,Usage\n3,{PIXELS},Training\n3,{PIXELS},PublicTest\n")
    with pytest.raises(DataError, match="split PrivateTest is empty"):
        load_fer2013(path)


def test_training_batches_are_augmented_and_reproducible(tiny_zip, tmp_path):
    split = load_fer2013(tiny_zip, tmp_path)["Training"]
    config = DataConfig()
    first = list(torch_train_batches(split, config, 8, seed=0, epoch=1))
    again = list(torch_train_batches(split, config, 8, seed=0, epoch=1))
    other = list(torch_train_batches(split, config, 8, seed=0, epoch=2))
    assert len(first) == len(split) // 8
    assert first[0][0].shape == (8, 1, 48, 48) and first[0][0].dtype == torch.float32
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], other[0][0])
    plain = list(torch_train_batches(split, DataConfig(augment=False), 8, seed=0, epoch=1))
    originals = {bytes(img.flatten().tolist()) for img in split.images}
    assert all(bytes((img[0] * 255).round().to(torch.uint8).flatten().tolist()) in originals for img in plain[0][0])
    augmented = [bytes((img[0] * 255).round().to(torch.uint8).flatten().tolist()) for img in first[0][0]]
    assert sum(a in originals for a in augmented) < len(augmented)


def test_eval_batches_pad_and_mask(tiny_zip, tmp_path):
    split = load_fer2013(tiny_zip, tmp_path)["PublicTest"]  # 14 faces
    batches = list(eval_batches(split, 8))
    assert [b[0].shape for b in batches] == [(8, 1, 48, 48)] * 2
    assert [int(b[2].sum()) for b in batches] == [8, 6]


def test_to_jax_shares_the_torch_buffer():
    tensor = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    array = to_jax(tensor)
    assert isinstance(array, jax.Array) and array.shape == (3, 4)
    if jax.devices()[0].platform == "cpu":
        assert array.unsafe_buffer_pointer() == tensor.data_ptr()
