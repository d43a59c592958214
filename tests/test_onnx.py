"""fer_jax.infer.onnx_export: the seed CNN as ONNX (through its PyTorch port) agrees with JAX; refusals are one line."""

import json
import sys
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from fer_jax.cli import main
from fer_jax.config import ModelConfig
from fer_jax.data.fer2013 import DataError
from fer_jax.infer.batch import probabilities
from fer_jax.infer.onnx_export import (
    OnnxClassifier,
    calibration_faces,
    export_model,
    export_onnx,
    require,
    torch_module,
)
from fer_jax.infer.predict import load_classifier, shipped_weights
from fer_jax.models.zoo import create_model
from tests.fixtures import make_faces, write_zip

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The shipped seed-CNN weights exported once for this module, by `fer-jax export-onnx --model seed_cnn`."""
    out = tmp_path_factory.mktemp("onnx") / "seed_cnn.onnx"
    assert main(["export-onnx", "--model", "seed_cnn", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """The test fixtures' 48x48 faces (one per class) and an all-white one."""
    pixels = torch.stack([f.pixels for f in make_faces({"Training": 0, "PublicTest": 0, "PrivateTest": 1})])
    return np.concatenate([pixels.numpy(), np.full((1, 48, 48), 255, np.uint8)])


@pytest.mark.slow
def test_onnx_logits_agree_with_jax_within_1e_4(exported, faces):
    classifier = load_classifier(shipped_weights("seed_cnn"))
    jax_logits = np.asarray(classifier.model(jnp.asarray(faces, jnp.float32)[..., None] / 255.0))
    onnx = OnnxClassifier(exported)
    onnx_logits = np.asarray(onnx.logits(faces))
    assert onnx_logits.shape == (len(faces), 7)
    assert np.abs(onnx_logits - jax_logits).max() < 1e-4
    assert (
        np.abs(np.asarray(probabilities(onnx, list(faces))) - np.asarray(probabilities(classifier, list(faces)))).max()
        < 1e-5
    )
    assert onnx.info["model"] == "seed_cnn" and onnx.info["sha256"] == classifier.info["sha256"]


def test_predict_with_the_onnx_backend_matches_jax(exported, faces, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "face.png"), faces[3])
    for backend in ("jax", "onnx"):
        assert (
            main(
                [
                    "predict",
                    "--no-detect",
                    "--backend",
                    backend,
                    "--out",
                    str(tmp_path / backend),
                    *(["--checkpoint", str(exported)] if backend == "onnx" else ["--model", "seed_cnn"]),
                    str(tmp_path / "face.png"),
                ]
            )
            == 0
        )
    jax_run, onnx_run = (json.loads((tmp_path / b / "predictions.json").read_text()) for b in ("jax", "onnx"))
    assert onnx_run["weights"]["backend"] == "onnxruntime" and onnx_run["weights"]["onnx"] == str(exported)
    got, want = (run["images"][0]["faces"][0]["probabilities"] for run in (onnx_run, jax_run))
    assert got == pytest.approx(want, abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("input_crop", [0, 40])
def test_a_narrow_vgg_bn_exports_with_its_batchnorm_statistics(faces, tmp_path, input_crop):
    model = create_model(ModelConfig(name="vgg_bn", width=0.125, input_crop=input_crop), seed=1)
    for path, variable in nnx.iter_graph(model):
        if isinstance(variable, nnx.BatchStat):  # statistics unlike the initial 0 / 1, as after training
            key = jax.random.key(len(path))
            variable[...] = jax.random.uniform(key, variable.shape, minval=0.5, maxval=1.5)
    model.eval()
    out = export_model(model, "vgg_bn", tmp_path / "vgg.onnx", {"source": "test"})
    onnx = OnnxClassifier(out)
    jax_logits = np.asarray(model(jnp.asarray(faces, jnp.float32)[..., None] / 255.0))
    assert np.abs(np.asarray(onnx.logits(faces)) - jax_logits).max() < 1e-4
    assert onnx.info["model"] == "vgg_bn" and onnx.info["source"] == "test"


@pytest.mark.slow
def test_int8_export_is_calibrated_on_training_faces_and_close_to_float(exported, tmp_path, capsys):
    all_faces = make_faces({"Training": 6, "PublicTest": 1, "PrivateTest": 1})
    training = [f for f in all_faces if f.split == "Training"]
    archive = write_zip(all_faces, tmp_path / "fer2013.zip")
    out = tmp_path / "seed_cnn-int8.onnx"
    assert main(["export-onnx", "--model", "seed_cnn", "--int8", "--data", str(archive), "--out", str(out)]) == 0
    assert "int8, seed_cnn" in capsys.readouterr().out
    int8, fp32 = OnnxClassifier(out), OnnxClassifier(exported)
    assert int8.info["quantization"] == "int8, static (QDQ), calibrated on 42 Training faces"
    assert int8.info["sha256"] == fp32.info["sha256"]
    faces = np.stack([f.pixels.numpy() for f in training])
    int8_probabilities, fp32_probabilities = np.asarray(int8(faces)), np.asarray(fp32(faces))
    assert 0 < np.abs(int8_probabilities - fp32_probabilities).max() < 0.05  # quantized, and close: 0.028 on AVX2
    assert out.stat().st_size < exported.stat().st_size / 3  # 8-bit weights: a quarter of float32's bytes


def test_int8_calibration_faces_are_an_even_sample():
    faces = torch.arange(2000).reshape(2000, 1, 1).expand(2000, 48, 48)
    sample = calibration_faces(faces, 512)
    assert sample.shape == (512, 48, 48) and sample[:3, 0, 0].tolist() == [0, 3, 6]
    assert calibration_faces(faces[:10], 512).shape == (10, 48, 48)


def test_data_without_int8_is_refused_in_one_line(capsys):
    assert main(["export-onnx", "--model", "seed_cnn", "--data", "x.zip", "--out", "never.onnx"]) == 2
    assert capsys.readouterr().err == "fer-jax export-onnx: error: --data calibrates an int8 model: it needs --int8\n"


def test_nets_without_a_pytorch_port_are_refused_in_one_line(capsys):
    assert main(["export-onnx", "--model", "resnet18", "--out", "never.onnx"]) == 2
    assert capsys.readouterr().err == (
        "fer-jax export-onnx: error: resnet18: no PyTorch port, so no ONNX export (supported: seed_cnn, vgg_bn)\n"
    )
    assert not Path("never.onnx").exists()
    with pytest.raises(
        DataError, match=r"^resnet18: no PyTorch port, so no ONNX export \(supported: seed_cnn, vgg_bn\)$"
    ):
        torch_module(None, "resnet18")
    with pytest.raises(DataError, match="seed_cnn.msgpack: hold a seed_cnn, not a vgg_bn$"):
        export_onnx("never.onnx", shipped_weights("seed_cnn"), model_name="vgg_bn")


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
