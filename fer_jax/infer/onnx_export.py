"""ONNX export of the seed CNN, and an ONNX Runtime classifier for `fer-jax predict --backend onnx`.

The export goes through the PyTorch port (`fer_jax.baseline.porting.flax_to_torch` into
`TorchSeedCNN`, `vgg_bn_to_torch` into `TorchVGGBN`) and `torch.onnx.export` (its torch.export-based exporter):
torch is already a dependency, and the port is tested weight for weight. torch is imported by the functions
that export, never at import: `fer-jax predict --backend onnx` runs without it.
jax2onnx was the alternative; its current release pins orbax-checkpoint
< 0.11.37 (this project pins 0.12.8) and pulls equinox, huggingface-hub and
netron. The zoo net without a PyTorch port (resnet18) is refused.

The ONNX model takes what the classifier takes: `faces`, (N, 48, 48) uint8
grayscale crops (scaled to [0, 1] inside the graph), and gives `logits`
(N, 7), in `fer_jax.EMOTIONS` order. Both need the `[onnx]` extra
(onnx, onnxscript, onnxruntime).

`export_onnx(..., int8_faces=...)` also quantizes the model with ONNX Runtime's static
quantization (8-bit weights per channel, uint8 activations whose ranges are
calibrated on Training faces, never on a test split): the CPU's integer dot
products (AVX-512 VNNI, AVX2) then do the convolutions.
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
from flax import nnx

from fer_jax.data.labels import EMOTIONS, IMAGE_SIZE
from fer_jax.errors import DataError

if TYPE_CHECKING:
    import torch

PORTED_MODELS = ("seed_cnn", "vgg_bn")
"""Zoo nets with a PyTorch port (fer_jax.baseline.porting), the ones that export to ONNX."""
OPSET = 18
CALIBRATION_FACES = 512
"""Training faces, evenly spaced over the split, whose activations calibrate an int8 model's ranges."""
EXTRA = "pip install 'fer-jax[onnx]'"


def require(module: str) -> Any:
    """Import one of the [onnx] extra's modules, or a one-line DataError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"ONNX needs the {module} package: {EXTRA}") from None


def torch_module(model: nnx.Module, name: str) -> torch.nn.Module:
    """The NNX model as the PyTorch module that is exported, wrapped in the classifier's contract ((N, 48, 48)
    uint8 faces in, logits out); a one-line DataError for a net without a port."""
    if name not in PORTED_MODELS:
        raise DataError(f"{name}: no PyTorch port, so no ONNX export (supported: {', '.join(PORTED_MODELS)})")
    import torch

    from fer_jax.baseline.models import TorchSeedCNN
    from fer_jax.baseline.porting import flax_to_torch, vgg_bn_to_torch

    class _UInt8Faces(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, faces: torch.Tensor) -> torch.Tensor:
            return self.net(faces.to(torch.float32).div(255.0).unsqueeze(1))

    if name == "vgg_bn":
        net = vgg_bn_to_torch(model)
    else:
        net = TorchSeedCNN()
        net.load_state_dict(flax_to_torch(model))
    return _UInt8Faces(net).eval()


def export_model(model: nnx.Module, name: str, out: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write an NNX zoo model (`name`: its ModelConfig name) as an ONNX file with a dynamic batch size.

    `info` (where the weights come from) is stored in the file's metadata as JSON.
    """
    import torch

    module = torch_module(model, name)
    for needed in ("onnx", "onnxscript"):
        require(needed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    program = torch.onnx.export(
        module,
        (example,),
        input_names=["faces"],
        output_names=["logits"],
        opset_version=OPSET,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
        verbose=False,
    )
    program.model.metadata_props.update(
        {"fer_jax": json.dumps({**(info or {}), "model": name, "emotions": list(EMOTIONS)})}
    )
    partial = out.with_name(f".{out.name}.partial")
    program.save(str(partial))
    partial.replace(out)
    return out


def calibration_faces(faces: torch.Tensor, count: int = CALIBRATION_FACES) -> torch.Tensor:
    """`count` faces evenly spaced over `faces` ((N, 48, 48) uint8): the same sample every time."""
    step = max(1, len(faces) // count)
    return faces[::step][:count]


def quantize_int8(fp32: str | Path, out: str | Path, faces: torch.Tensor) -> Path:
    """Statically quantize the exported model `fp32` into `out`: QDQ format, uint8 weights per output channel,
    uint8 activations with min-max ranges measured on `faces` ((N, 48, 48) uint8 Training crops).

    Weights are uint8 (U8U8), not int8: on x86 CPUs without VNNI ONNX Runtime multiplies uint8 by int8
    with an instruction that saturates in 16 bits. With int8 weights the seed CNN's probabilities moved
    by 0.35 on such a CPU (AVX2, 2026-12-04) against 0.014 with VNNI; 7-bit int8 weights (`reduce_range`)
    still moved them by 0.078; uint8 weights by 0.028.
    """
    quantization = require("onnxruntime.quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Faces(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(faces.split(64))

        def get_next(self) -> dict[str, Any] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"faces": batch.contiguous().numpy()}

    out = Path(out)
    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        partial = out.with_name(f".{out.name}.partial")
        quantization.quantize_static(
            str(prepared),
            str(partial),
            Faces(),
            quant_format=quantization.QuantFormat.QDQ,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QUInt8,
            per_channel=True,
        )
    partial.replace(out)
    return out


def export_onnx(
    out: str | Path,
    checkpoint: str | Path | None = None,
    model_name: str | None = None,
    int8_faces: torch.Tensor | None = None,
) -> dict[str, Any]:
    """`fer-jax export-onnx`: the shipped weights, exported weights (.msgpack) or a run folder's best checkpoint
    as ONNX. `model_name` names a zoo net: without a checkpoint, its shipped weights; with one, what it must hold.
    `int8_faces` ((N, 48, 48) uint8 Training crops): write the int8 model calibrated on them instead."""
    from fer_jax.infer.predict import load_classifier, shipped_weights

    if model_name is not None and model_name not in PORTED_MODELS:
        raise DataError(f"{model_name}: no PyTorch port, so no ONNX export (supported: {', '.join(PORTED_MODELS)})")
    if model_name is not None and checkpoint is None:
        checkpoint = shipped_weights(model_name)
    classifier = load_classifier(checkpoint)
    if model_name is not None and classifier.info["model"] != model_name:
        raise DataError(f"{checkpoint or 'the shipped weights'}: hold a {classifier.info['model']}, not a {model_name}")
    info = {k: v for k, v in classifier.info.items() if isinstance(v, (str, int, float, type(None)))}
    if int8_faces is None:
        export_model(classifier.model, classifier.info["model"], out, info)
        return {**info, "onnx": str(out)}
    require("onnxruntime")
    info["quantization"] = f"int8, static (QDQ), calibrated on {len(int8_faces)} Training faces"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        fp32 = export_model(classifier.model, classifier.info["model"], Path(folder) / "fp32.onnx", info)
        quantize_int8(fp32, out, int8_faces)
    return {**info, "onnx": str(out)}


BACKENDS = ("jax", "onnx")


def load_backend(checkpoint: str | Path | None = None, backend: str = "jax") -> Any:
    """`fer_jax.infer.predict.load_classifier`'s classifier (jax), or the same weights run by ONNX Runtime (onnx: an
    .onnx file, or any other checkpoint exported once to the cache folder, `cached_onnx`)."""
    from fer_jax.infer.predict import load_classifier

    if backend == "jax":
        return load_classifier(checkpoint)
    if backend != "onnx":
        raise DataError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if checkpoint is not None and Path(checkpoint).suffix == ".onnx":
        return OnnxClassifier(checkpoint)
    return OnnxClassifier(cached_onnx(checkpoint))


def cached_onnx(checkpoint: str | Path | None = None) -> Path:
    """Exported weights (None: the shipped ones) as ONNX, exported once into the cache folder under their sha256;
    a run folder is exported afresh into a temporary folder each time."""
    from fer_jax.data.cache import default_cache_root
    from fer_jax.infer.predict import load_classifier

    classifier = load_classifier(checkpoint)
    digest = classifier.info.get("sha256")
    if digest is None:
        return Path(export_onnx(Path(tempfile.mkdtemp(prefix="fer-jax-onnx-")) / "model.onnx", checkpoint)["onnx"])
    path = default_cache_root() / "onnx" / f"{classifier.info['model']}-{digest[:16]}.onnx"
    if not path.is_file():
        export_onnx(path, checkpoint)
    return path


class OnnxClassifier:
    """An exported .onnx file behind ONNX Runtime (CPU): 48x48 uint8 faces in, probabilities out."""

    def __init__(self, path: str | Path) -> None:
        ort = require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such file (write one with `fer-jax export-onnx`)")
        try:
            self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own (Fail, InvalidProtobuf, ...) for a bad file
            raise DataError(f"{path}: not a readable ONNX model ({str(err).splitlines()[0][:200]})") from None
        inputs = [(i.name, i.type) for i in self._session.get_inputs()]
        outputs = [o.name for o in self._session.get_outputs()]
        if inputs != [("faces", "tensor(uint8)")] or "logits" not in outputs:
            raise DataError(
                f"{path}: an ONNX model with inputs {inputs} and outputs {outputs}; expected the input 'faces' "
                "(uint8) and the output 'logits' of `fer-jax export-onnx`"
            )
        try:
            stored = json.loads(self._session.get_modelmeta().custom_metadata_map.get("fer_jax", "{}"))
        except ValueError:
            stored = None
        if not isinstance(stored, dict):
            print(f"warning: {path}: its 'fer_jax' metadata is not a JSON object; ignored", file=sys.stderr)
            stored = {}
        self.info = {**stored, "onnx": str(path), "backend": "onnxruntime"}
        """Where the weights come from, as stored at export."""

    def logits(self, faces: Any) -> jax.Array:
        """(N, 48, 48) uint8 faces -> (N, 7) logits."""
        (logits,) = self._session.run(["logits"], {"faces": jax.device_get(jnp.asarray(faces, jnp.uint8))})
        return jnp.asarray(logits)

    def __call__(self, faces: Any) -> jax.Array:
        """(N, 48, 48) uint8 faces -> (N, 7) probabilities in `EMOTIONS` order."""
        return jax.nn.softmax(self.logits(faces))
