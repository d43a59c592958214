"""Tiny FER-2013 look-alikes built by the tests (never real FER images in the repo).

Faces are random 48x48 images with a class-dependent brightness, so a network
can learn them in a few steps. The same faces can be written in the Kaggle
folder/zip layout and as the challenge CSV.
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.io import encode_jpeg, encode_png

from fer_jax.data.fer2013 import EMOTIONS, SPLITS
from fer_jax.files import read_jsonl

SPLIT_FOLDERS = {"Training": "train", "PublicTest": "test", "PrivateTest": "test"}


@dataclass
class Face:
    split: str
    label: int
    pixels: torch.Tensor  # (48, 48) uint8
    name: str


def make_faces(per_class: dict[str, int], seed: int = 0) -> list[Face]:
    generator = torch.Generator().manual_seed(seed)
    faces = []
    for split in SPLITS:
        for label in range(len(EMOTIONS)):
            for i in range(per_class[split]):
                noise = torch.randint(0, 60, (48, 48), generator=generator)
                pixels = (noise + 25 * label).clamp(0, 255).to(torch.uint8)
                faces.append(Face(split, label, pixels, f"{split}_{label}{i:04d}"))
    return faces


def encode(face: Face, fmt: str) -> bytes:
    image = face.pixels.unsqueeze(0)
    data = encode_png(image) if fmt == "png" else encode_jpeg(image, quality=95)
    return bytes(data.tolist())


def member_path(face: Face, fmt: str) -> str:
    return f"{SPLIT_FOLDERS[face.split]}/{EMOTIONS[face.label]}/{face.name}.{fmt}"


def write_folder(faces: list[Face], root: Path, fmt: str = "png") -> Path:
    for face in faces:
        path = root / member_path(face, fmt)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(face, fmt))
    return root


def write_zip(faces: list[Face], path: Path, fmt: str = "jpg") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for face in faces:
            zf.writestr(member_path(face, fmt), encode(face, fmt))
    return path


def write_csv(faces: list[Face], path: Path) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for face in faces:
            writer.writerow([face.label, " ".join(str(v) for v in face.pixels.flatten().tolist()), face.split])
    return path


def tiny_run_overrides(cache_dir: Path) -> list[str]:
    """`--set` flags for a run on `tiny_zip` in seconds: batch 8, every face, a test cache."""
    overrides = [f"data.cache_dir={cache_dir}", "train.batch_size=8", "train.eval_batch_size=16"]
    overrides += ["data.train_limit=0", "data.eval_limit=0"]
    return [flag for override in overrides for flag in ("--set", override)]


def metrics_without_seconds(run_dir: Path) -> list[dict]:
    """A run folder's metrics.jsonl rows without their wall-clock `seconds`: what two runs of the same
    config must agree on."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_jsonl(run_dir / "metrics.jsonl")]
