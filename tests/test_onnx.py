"""fer_jax.onnx_export: the seed CNN as ONNX (through its PyTorch port) agrees with JAX; refusals are one line."""

import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from fer_jax.batch import probabilities
from fer_jax.data import DataError
from fer_jax.onnx_export import OnnxClassifier, export_onnx, require, torch_module
from fer_jax.predict import load_classifier
from tests.fixtures import make_faces

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> str:
    """The shipped seed-CNN weights exported once for this module."""
    return export_onnx(tmp_path_factory.mktemp("onnx") / "seed_cnn.onnx")["onnx"]


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """The test fixtures' 48x48 faces (one per class) and an all-white one."""
    pixels = torch.stack([f.pixels for f in make_faces({"Training": 0, "PublicTest": 0, "PrivateTest": 1})])
    return np.concatenate([pixels.numpy(), np.full((1, 48, 48), 255, np.uint8)])


def test_onnx_logits_agree_with_jax_within_1e_4(exported, faces):
    classifier = load_classifier()
    jax_logits = np.asarray(classifier.model(jnp.asarray(faces, jnp.float32)[..., None] / 255.0))
    onnx = OnnxClassifier(exported)
    onnx_logits = np.asarray(onnx.logits(faces))
    assert onnx_logits.shape == (len(faces), 7)
    assert np.abs(onnx_logits - jax_logits).max() < 1e-4
    assert np.abs(np.asarray(probabilities(onnx, list(faces))) - np.asarray(probabilities(classifier, list(faces)))).max() < 1e-5
    assert onnx.info["model"] == "seed_cnn" and onnx.info["sha256"] == classifier.info["sha256"]


def test_nets_without_a_pytorch_port_are_refused_in_one_line():
    with pytest.raises(DataError, match=r"^resnet18: no PyTorch port, so no ONNX export \(supported: seed_cnn\)$"):
        torch_module(None, "resnet18")
    with pytest.raises(DataError, match="^vgg_bn: no PyTorch port"):
        export_onnx("never.onnx", model_name="vgg_bn")


def test_missing_extra_and_bad_files_are_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(DataError, match=r"^ONNX needs the onnxruntime package: pip install 'fer-jax\[onnx\]'$"):
        require("onnxruntime")
    monkeypatch.undo()
    with pytest.raises(DataError, match="no such file"):
        OnnxClassifier(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(DataError, match="not a readable ONNX model"):
        OnnxClassifier(tmp_path / "junk.onnx")
