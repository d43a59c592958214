"""One typed configuration shared by the CLI, the experiments and the notebooks.

Every run writes the `Config` it used to `RUN_DIR/config.json`; `Config.from_dict`
reads it back. Overrides use dotted keys, e.g. `optim.learning_rate=3e-4`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DATA_PATH = "data/fer2013.zip"


class ConfigError(ValueError):
    """A config key or value that does not exist or does not fit; one line."""


@dataclass
class DataConfig:
    """Where FER-2013 comes from and how training images are augmented."""

    source: str = ""
    """Kaggle zip, extracted folder, or fer2013.csv; empty: $FER2013_ZIP, else data/fer2013.zip."""
    cache_dir: str = ""
    """Cache root for decoded archives, data checks and TFDS copies, each in a folder named by the archive's
    sha256 (empty: $FER_JAX_CACHE, else the user cache folder; see fer_jax.data.cache)."""
    train_limit: int = 0
    """Use only the first N shuffled training images (0: all). For quick runs."""
    eval_limit: int = 0
    """Use only the first N images of PublicTest and PrivateTest (0: all)."""
    augment: bool = True
    rotation_degrees: float = 10.0
    zoom: float = 0.1
    """Random zoom: scale drawn from [1 - zoom, 1 + zoom]."""
    translate: float = 0.0
    """Random shift of up to this fraction of the side, in whole pixels (RandomAffine's translate,
    zero fill): the same as 'random crop with zero padding' of round(translate * 48) pixels."""
    erasing: float = 0.0
    """Probability of erasing a random rectangle to 0 (torchvision's RandomErasing: area 2-33%,
    aspect ratio 0.3-3.3), after the affine transform and flip; 0: off."""
    horizontal_flip: bool = True
    mixup: float = 0.0
    """Mixup's alpha: each training batch is blended with a shuffled copy of itself, images and targets by the
    same weight drawn from Beta(alpha, alpha), inside the train step (0: off; 0.2-0.4 is usual)."""
    interpolation: str = "nearest"
    """Sampling of the rotation and zoom: 'nearest' (torchvision's RandomAffine default) or 'bilinear' (Keras')."""
    fill: str = "zero"
    """Pixels the rotation, zoom or shift brings in from outside the face: 'zero' (torchvision's default) or
    'edge' (the nearest border pixel, Keras' fill_mode='nearest')."""
    pipeline: str = "torchvision"
    """'torchvision' (the reference: DataLoader batches handed to JAX by DLPack) or 'device'
    (the whole uint8 split on the accelerator, augmented by fer_jax.data.augment inside the jitted step)."""
    num_workers: int = 0
    """DataLoader worker processes (0: load in the training process)."""
    loader: str = "torchvision"
    """'torchvision' (decode the archive/CSV with fer_jax.data.fer2013) or 'tfds' (read the TFDS array_record copy
    built by fer_jax.data.tfds_builder)."""
    tfds_dir: str = ""
    """TFDS data folder for loader='tfds', built there from `source` if missing (empty: `tfds/` in the source's
    content folder under the cache root)."""

    def resolved_source(self) -> str:
        """The dataset path this config points at."""
        return self.source or os.environ.get("FER2013_ZIP") or DEFAULT_DATA_PATH


@dataclass
class ModelConfig:
    name: str = "seed_cnn"
    """'seed_cnn', 'vgg_bn' or 'resnet18' (`fer_jax.models.zoo.MODELS`)."""
    compute_dtype: str = "float32"
    """'float32', 'bfloat16' or 'auto': what the layers compute in. Weights, optimizer state, BatchNorm statistics,
    logits and loss stay float32. 'auto' (the CPU-best recipe's): bfloat16 on a GPU/TPU and on a CPU with AMX or
    AVX512-BF16 units, float32 on other CPUs; results.json records the choice. float32 by default: the reference
    that PyTorch comparisons, ported weights and tests check to 1e-5."""
    width: float = 1.0
    """Multiplies every layer width of 'vgg_bn' and 'resnet18' (e.g. 0.25 for cheap CPU ablations); 'seed_cnn': 1
    only."""
    input_crop: int = 0
    """'vgg_bn' and 'resnet18': the side of the central square of each 48x48 face that the network reads (0: the
    whole face; 16-47). 40 is Khaireddin & Chen's input: with `data.translate`, training sees shifted 40x40 crops,
    evaluation and prediction the central one, and the convolutions 31% fewer pixels."""


@dataclass
class OptimConfig:
    name: str = "adam"
    """'adam' or 'sgd' (with momentum)."""
    learning_rate: float = 1e-3
    """The seed used 1e-4; 1e-3 learned faster in the 5-epoch recipe search (results/seed_cnn_search.json)."""
    schedule: str = "cosine"
    """'constant', 'cosine' or 'linear' (both decay to 0 at the end of `train.epochs`; with `warmup_epochs`,
    'linear' is the triangular one-cycle schedule)."""
    warmup_epochs: float = 0.0
    """Linear warmup from 0 to `learning_rate` over this many epochs, then `schedule` over the rest."""
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    """Decays kernels only (conv and dense weights): biases and BatchNorm scales/shifts are not decayed."""
    label_smoothing: float = 0.0
    """Training targets (1 - s) * one-hot + s / 7; validation and test losses stay plain cross-entropy."""


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int = 256
    patience: int = 10
    """Stop after this many epochs without a better PublicTest accuracy (0: never)."""
    seed: int = 0
    devices: int = 0
    """Devices to split each batch over (data parallelism; 0: all local devices)."""
    steps_per_dispatch: int = 0
    """With data.pipeline='device': train steps fused into one jitted call. 0: 1 on the CPU, where the steps of
    a call are unrolled (XLA:CPU runs convolution gradients in a loop ~30x slower) and one step compiles in half
    the time of four at the same speed; 32 on a GPU or TPU, as one `lax.scan`."""
    crops_tta: bool = False
    """Also report the 'crops' TTA of `fer-jax evaluate --crops` in results.json (`test_accuracy_crops`: 10 views,
    the face, its four 44x44 corner crops scaled back, and their mirror images; 5x the flip TTA's cost)."""
    ema_decay: float = 0.0
    """Exponential moving average of the weights (e.g. 0.999; 0: off). When on, the EMA weights are
    the ones validated, selected, saved as the best checkpoint and reported."""
    profile_steps: int = 0
    """Trace this many train steps right after the run's first (which compiles) into RUN_DIR/plugins/profile/:
    jax.profiler for JAX, torch.profiler for the baseline (0: off). A dispatch of data.pipeline='device' counts
    as its `steps_per_dispatch` steps. Tracing does not change what the run computes."""
    distributed: bool = False
    """Join a multi-process run with `jax.distributed.initialize()` (which process this is: `ProcessConfig`): the
    mesh spans every process's devices, process 0 alone writes the run folder (docs/distributed.md)."""
    distributed_timeout: int = 120
    """Seconds a multi-process run waits for its processes to join, and for a silent one before it fails."""


@dataclass
class ProcessConfig:
    """Which process this is in a multi-process run (`train.distributed`), from flags or the launcher's environment.

    Not saved with the run: it differs per process and per launch (a run may resume with another process
    count). Empty fields come from $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES and $JAX_PROCESS_ID, else
    from JAX's cluster auto-detection (SLURM, Cloud TPU, Open MPI, Kubernetes).
    """

    coordinator_address: str = ""
    """host:port of process 0's coordination service."""
    num_processes: int = 0
    process_id: int = -1


RETIRED_KEYS = {
    "model.conv_impl": "every model runs XLA's own convolution; the hand-written CPU kernels it chose were "
    "no faster under the project's XLA flags (docs/performance.md)",
}
"""Keys older versions wrote into config.json, and why they went."""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run_dir: str = "runs/seed_cnn"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Config:
        """The config a dict (e.g. a run's config.json) describes; keys of `RETIRED_KEYS`, written by older
        versions, are skipped, so their runs still resume and evaluate."""
        config = cls()
        for key, value in _flatten(raw).items():
            if key not in RETIRED_KEYS:
                config.set(key, value)
        return config

    @classmethod
    def load(cls, path: str | Path) -> Config:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def set(self, dotted_key: str, value: Any) -> None:
        """Set `section.field` (or a top-level field), converting strings to the field's type."""
        if dotted_key in RETIRED_KEYS:
            raise ConfigError(f"config key {dotted_key!r} is gone: {RETIRED_KEYS[dotted_key]}")
        *sections, name = dotted_key.split(".")
        target: Any = self
        for section in sections:
            if not dataclasses.is_dataclass(target) or not hasattr(target, section):
                raise ConfigError(f"unknown config key {dotted_key!r}")
            target = getattr(target, section)
        fields = {f.name: f for f in dataclasses.fields(target)}
        if name not in fields or dataclasses.is_dataclass(getattr(target, name)):
            raise ConfigError(f"unknown config key {dotted_key!r}; known: {', '.join(sorted(known_keys()))}")
        setattr(target, name, _coerce(value, type(getattr(target, name)), dotted_key))

    def apply_overrides(self, overrides: list[str]) -> Config:
        """Apply `key=value` strings, as given to `--set`."""
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"override {item!r} is not of the form key=value")
            self.set(key.strip(), value.strip())
        return self


def quick(config: Config) -> Config:
    """Shrink a config to a run of about a minute on a laptop CPU (smoke test, not a result)."""
    config.data.train_limit = 2048
    config.data.eval_limit = 512
    config.train.epochs = 2
    return config


def known_keys() -> list[str]:
    return list(_flatten(Config().to_dict()))


def _flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _coerce(value: Any, kind: type, key: str) -> Any:
    if not isinstance(value, str) or kind is str:
        if kind is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, kind):
            raise ConfigError(f"{key} must be {kind.__name__}, got {value!r}")
        return value
    if kind is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{key} must be {kind.__name__}, got {value!r}") from None
