"""Loaders, label order, safe extraction, clear errors and the torch -> JAX hand-off."""

import zipfile

import jax
import pytest
import torch
from torchvision.io import encode_png

from fer_jax.config import DataConfig
from fer_jax.data import (
    EMOTIONS,
    SPLITS,
    DataError,
    Split,
    eval_batches,
    extract_zip,
    load_fer2013,
    read_challenge_csv,
    read_image_folder,
    to_jax,
    torch_train_batches,
)
from tests.conftest import SMALL
from tests.fixtures import Face, make_faces, write_csv, write_folder, write_zip


def test_challenge_label_order():
    assert EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def test_folder_and_csv_give_each_face_the_same_label(tmp_path):
    """The folder's alphabetical classes (neutral before sad) must be remapped by name."""
    faces = make_faces({"Training": 2, "PublicTest": 1, "PrivateTest": 1})
    from_folder = read_image_folder(write_folder(faces, tmp_path / "folder", fmt="png"))
    from_csv = read_challenge_csv(write_csv(faces, tmp_path / "fer2013.csv"))
    for split in SPLITS:
        folder_labels = {bytes(img.flatten().tolist()): int(lab) for img, lab in zip(from_folder[split].images, from_folder[split].labels)}
        csv_labels = {bytes(img.flatten().tolist()): int(lab) for img, lab in zip(from_csv[split].images, from_csv[split].labels)}
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
    assert (tmp_path / "cache" / "fer2013" / "train").is_dir()


def test_unsafe_zip_members_are_refused(tmp_path):
    for bad in ("../evil.jpg", "/etc/evil.jpg", "train/../../evil.jpg"):
        archive = tmp_path / "bad.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr(bad, b"x")
        with pytest.raises(DataError, match="unsafe member"):
            extract_zip(archive, tmp_path / "out")
        assert not (tmp_path / "out" / "bad").exists()
        assert not (tmp_path / "evil.jpg").exists()


def test_interrupted_extraction_never_counts_as_done(tiny_zip, tmp_path, monkeypatch):
    def crash(self, path):
        raise OSError("disk full")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", crash)
    with pytest.raises(OSError):
        extract_zip(tiny_zip, tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert extract_zip(tiny_zip, tmp_path) == tmp_path / "fer2013"


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
    root = folder_with(tmp_path, "Training_big.png", bytes(encode_png(torch.zeros(1, 64, 64, dtype=torch.uint8)).tolist()))
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
