"""One typed configuration shared by the CLI, the experiments and the notebooks.

Every run writes the `Config` it used to `RUN_DIR/config.json`; `Config.from_dict`
reads it back. Overrides use dotted keys, e.g. `optim.learning_rate=3e-4`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
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
        """The config a dict (e.g. a run's config.json) describes, validated; keys of `RETIRED_KEYS`, written by
        older versions, are skipped, so their runs still resume and evaluate."""
        if not isinstance(raw, dict):
            raise ConfigError(f"a config is a JSON object of sections, got {type(raw).__name__}")
        config = cls()
        for key, value in _flatten(raw).items():
            if key not in RETIRED_KEYS:
                config.set(key, value)
        return config.validate()

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """The config in a JSON file; a one-line ConfigError naming the file when it cannot be read or used."""
        try:
            raw = json.loads(Path(path).read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except (OSError, ValueError, RecursionError) as err:  # a folder, binary garbage, bad JSON, absurd nesting
            reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise ConfigError(f"{path}: not a readable JSON config ({reason})") from None
        try:
            return cls.from_dict(raw)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def validate(self) -> Config:
        """Check every field's type and range (`FIELD_RULES`) and the fields that depend on each other; a one-line
        ConfigError naming the field, its value and what is allowed. Returns the config.

        `set` checks each value as it comes in; this also catches fields assigned directly (notebooks,
        experiments) and the combinations no single value decides."""
        for key in known_keys():
            *sections, name = key.split(".")
            target: Any = self
            for section in sections:
                target = getattr(target, section)
            check_value(key, getattr(target, name), FIELD_TYPES[key])
        model = self.model
        if model.width != 1.0 and model.name not in WIDTH_SCALABLE:
            raise ConfigError(
                f"model.width={model.width!r}: {model.name!r} has width 1 only (other widths: "
                f"{' or '.join(WIDTH_SCALABLE)})"
            )
        if model.input_crop and model.name not in WIDTH_SCALABLE:
            raise ConfigError(
                f"model.input_crop={model.input_crop!r}: {model.name!r} reads the whole face, 0 only (crops: "
                f"{' or '.join(WIDTH_SCALABLE)})"
            )
        return self

    def set(self, dotted_key: str, value: Any) -> None:
        """Set `section.field` (or a top-level field), converting strings to the field's type."""
        if dotted_key in RETIRED_KEYS:
            raise ConfigError(f"config key {dotted_key!r} is gone: {RETIRED_KEYS[dotted_key]}")
        if dotted_key not in FIELD_TYPES:
            raise ConfigError(f"unknown config key {_shown(dotted_key)}; known: {', '.join(sorted(known_keys()))}")
        *sections, name = dotted_key.split(".")
        target: Any = self
        for section in sections:
            target = getattr(target, section)
        kind = FIELD_TYPES[dotted_key]
        setattr(target, name, check_value(dotted_key, _coerce(value, kind, dotted_key), kind))

    def apply_overrides(self, overrides: list[str]) -> Config:
        """Apply `key=value` strings, as given to `--set`."""
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"override {_shown(item)} is not of the form key=value")
            self.set(key.strip(), value.strip())
        return self


MODEL_NAMES = ("seed_cnn", "vgg_bn", "resnet18")
"""`model.name`'s choices: the keys of `fer_jax.models.zoo.MODELS` (a test holds them equal)."""
WIDTH_SCALABLE = ("vgg_bn", "resnet18")
"""The models that take `model.width` and `model.input_crop`."""
SMALLEST_CROP = 16
"""vgg_bn pools four times: a crop under 16 pixels would leave nothing to flatten."""
INTERPOLATIONS = ("nearest", "bilinear")
"""`data.interpolation`'s choices."""
FILLS = ("zero", "edge")
"""`data.fill`'s choices."""
MAX_BATCH = 32768
"""The largest batch (train or eval): FER-2013's largest split has 28,709 faces, and an eval batch is padded to
its full size, so a larger one only allocates zeros."""


@dataclass(frozen=True)
class Allowed:
    """What a config field accepts: `test(value)` on a value of the field's type, and `words` that say it."""

    words: str
    test: Callable[[Any], bool]


def _choice(*choices: str) -> Allowed:
    return Allowed("one of " + ", ".join(repr(c) for c in choices), lambda v: v in choices)


def _path(empty: str) -> Allowed:
    return Allowed(f"a path ({empty}) without NUL characters", lambda v: "\0" not in v)


def _integer(low: int, high: int | None = None, note: str = "") -> Allowed:
    words = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    return Allowed(words + (f" ({note})" if note else ""), lambda v: low <= v and (high is None or v <= high))


FIELD_RULES: dict[str, Allowed] = {
    "data.source": _path("empty: $FER2013_ZIP, else data/fer2013.zip"),
    "data.cache_dir": _path("empty: the default cache"),
    "data.train_limit": _integer(0, note="0: all"),
    "data.eval_limit": _integer(0, note="0: all"),
    "data.rotation_degrees": Allowed("degrees from 0 to 180", lambda v: 0 <= v <= 180),
    "data.zoom": Allowed("a fraction in [0, 1)", lambda v: 0 <= v < 1),
    "data.translate": Allowed("a fraction of the side in [0, 1]", lambda v: 0 <= v <= 1),
    "data.erasing": Allowed("a probability in [0, 1]", lambda v: 0 <= v <= 1),
    "data.mixup": Allowed("a finite alpha >= 0 (0: off)", lambda v: 0 <= v < math.inf),
    "data.interpolation": _choice(*INTERPOLATIONS),
    "data.fill": _choice(*FILLS),
    "data.pipeline": _choice("torchvision", "device"),
    "data.num_workers": _integer(0, 256, "0: load in the training process"),
    "data.loader": _choice("torchvision", "tfds"),
    "data.tfds_dir": _path("empty: beside the decoded archive"),
    "model.name": _choice(*MODEL_NAMES),
    "model.compute_dtype": _choice("float32", "bfloat16", "auto"),
    "model.width": Allowed("a multiplier in (0, 8]", lambda v: 0 < v <= 8),
    "model.input_crop": Allowed(
        f"0 (the whole face) or a side from {SMALLEST_CROP} to 47", lambda v: v == 0 or SMALLEST_CROP <= v <= 47
    ),
    "optim.name": _choice("adam", "sgd"),
    "optim.learning_rate": Allowed("a finite number >= 0 (0: no updates)", lambda v: 0 <= v < math.inf),
    "optim.schedule": _choice("constant", "cosine", "linear"),
    "optim.warmup_epochs": Allowed("a finite number of epochs >= 0", lambda v: 0 <= v < math.inf),
    "optim.momentum": Allowed("a number in [0, 1)", lambda v: 0 <= v < 1),
    "optim.weight_decay": Allowed("a finite number >= 0", lambda v: 0 <= v < math.inf),
    "optim.label_smoothing": Allowed("a number in [0, 1)", lambda v: 0 <= v < 1),
    "train.epochs": _integer(1, 10_000),
    "train.batch_size": _integer(1, MAX_BATCH),
    "train.eval_batch_size": _integer(1, MAX_BATCH),
    "train.patience": _integer(0, note="0: never stop early"),
    "train.seed": _integer(0, 2**32 - 1),
    "train.devices": _integer(0, note="0: all local devices"),
    "train.steps_per_dispatch": _integer(0, note="0: chosen by the backend"),
    "train.ema_decay": Allowed("a decay in [0, 1) (0: off)", lambda v: 0 <= v < 1),
    "train.profile_steps": _integer(0, note="0: off"),
    "train.distributed_timeout": _integer(1, 86400, "seconds"),
    "run_dir": Allowed("a non-empty path without NUL characters", lambda v: bool(v) and "\0" not in v),
}
"""The values each config field accepts (booleans: true or false, nothing more to check)."""


def check_value(key: str, value: Any, kind: type) -> Any:
    """`value` if it is a `kind` (an int is a float too; a bool is no number) that `FIELD_RULES[key]` allows,
    else a one-line ConfigError naming the field, the value and what is allowed."""
    given = value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) if abs(value) < 2**1000 else math.inf
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{key}={_shown(given)}: expected {_KIND_WORDS[kind]}")
    rule = FIELD_RULES.get(key)
    if rule is not None and not rule.test(value):
        raise ConfigError(f"{key}={_shown(given)}: expected {rule.words}")
    return value


def _shown(value: Any) -> str:
    """A value as a message shows it: its repr, cut to 80 characters (a config value may be a whole file)."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for Python to print
        return "a number of over 4,000 digits"
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


_KIND_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def set_flags(config: Config, flags: dict[str, tuple[str, Any]]) -> None:
    """Set `config`'s key of each command-line flag given ({flag: (key, value or None)}); a value out of range is
    a one-line ConfigError that names the flag too."""
    for flag, (key, value) in flags.items():
        if value is not None:
            try:
                config.set(key, value)
            except ConfigError as err:
                raise ConfigError(f"{flag}: {err}") from None


def quick(config: Config) -> Config:
    """Shrink a config to a run of about a minute on a laptop CPU (smoke test, not a result)."""
    config.data.train_limit = 2048
    config.data.eval_limit = 512
    config.train.epochs = 2
    return config


def known_keys() -> list[str]:
    return list(FIELD_TYPES)


def _flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _coerce(value: Any, kind: type, key: str) -> Any:
    """A string (from `--set` or a flag) converted to `kind`; other values as they are (`check_value` checks them)."""
    if not isinstance(value, str) or kind is str:
        return value
    if kind is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}={_shown(value)}: expected true or false")
    try:
        return kind(value)
    except (ValueError, OverflowError):
        raise ConfigError(f"{key}={_shown(value)}: expected {_KIND_WORDS[kind]}") from None


FIELD_TYPES: dict[str, type] = {key: type(value) for key, value in _flatten(Config().to_dict()).items()}
"""Every config key (dotted) and the type of its value."""
