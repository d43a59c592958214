"""The recipe ingredients (warmup, label smoothing, weight-decay mask, EMA, random erasing, flip TTA),
the train/select/report protocol as the code enforces it, and the SOTA experiment configs."""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from flax import nnx
from torchvision.transforms import v2

from experiments import configs
from experiments.ablation import SMALL_SCALE, VARIANTS, format_table, slug, variant_configs, whole_command
from experiments.run import experiment_config
from fer_jax.baseline.optim import learning_rate_schedule, make_torch_optimizer
from fer_jax.baseline.trainer import train_torch
from fer_jax.config import Config, ConfigError, DataConfig
from fer_jax.data.augment import ERASING_RATIO, ERASING_SCALE, affine, augment, erase, sample_erasing, sample_params
from fer_jax.data.fer2013 import FER2013, as_nhwc, train_transform
from fer_jax.models.zoo import count_params, create_model
from fer_jax.train import keys, loop
from fer_jax.train import trainer as training
from fer_jax.train.checkpoints import RunCheckpoints
from fer_jax.train.evaluation import averaged_accuracy, evaluate_split, load_splits
from fer_jax.train.optim import decays, make_optimizer, make_schedule
from fer_jax.train.restore import restore_weights
from fer_jax.train.state import EmaTrainState, TrainState, as_saved, from_saved, initial_model, selected_weights
from fer_jax.train.steps import ema_decay_at, init_state, mixup_pairs, training_loss, update_ema
from tests.test_training import tiny_config

ROOT = Path(__file__).resolve().parent.parent
OLD_FORMAT_RUN = ROOT / "runs" / "seed_cnn" / "20261127-141814"


def schedule_config(schedule: str, warmup_epochs: float) -> Config:
    config = Config()
    config.apply_overrides(
        [
            f"optim.schedule={schedule}",
            f"optim.warmup_epochs={warmup_epochs}",
            "optim.learning_rate=0.1",
            "train.epochs=2",
        ]
    )
    return config


def test_warmup_then_cosine_by_hand_and_in_pytorch():
    config = schedule_config("cosine", 0.5)  # 10 steps an epoch: 5 warmup steps, then 15 of cosine
    schedule, torch_schedule = make_schedule(config, 10), learning_rate_schedule(config, 10)
    expected = {0: 0.0, 1: 0.02, 4: 0.08, 5: 0.1, 12: 0.05 * (1 + math.cos(math.pi * 7 / 15)), 20: 0.0, 25: 0.0}
    for step, rate in expected.items():
        assert float(schedule(step)) == pytest.approx(rate, abs=1e-7), step
    for step in range(26):
        assert torch_schedule(step) == pytest.approx(float(schedule(step)), abs=1e-7), step


def test_one_cycle_is_warmup_then_linear_decay_to_zero_in_both_frameworks():
    config = schedule_config("linear", 0.5)  # 10 steps an epoch: 5 warmup steps, then 15 of linear decay
    schedule, torch_schedule = make_schedule(config, 10), learning_rate_schedule(config, 10)
    expected = {0: 0.0, 4: 0.08, 5: 0.1, 8: 0.08, 14: 0.04, 20: 0.0, 25: 0.0}
    for step, rate in expected.items():
        assert float(schedule(step)) == pytest.approx(rate, abs=1e-7), step
        assert torch_schedule(step) == pytest.approx(rate, abs=1e-7), step


def test_warmup_then_constant_and_no_warmup_is_the_old_schedule():
    schedule = make_schedule(schedule_config("constant", 1.0), 4)
    assert [float(schedule(s)) for s in (0, 2, 4, 7)] == pytest.approx([0.0, 0.05, 0.1, 0.1])
    old = optax.cosine_decay_schedule(0.1, 20)
    new, in_torch = (
        make_schedule(schedule_config("cosine", 0.0), 10),
        learning_rate_schedule(schedule_config("cosine", 0.0), 10),
    )
    for step in range(22):
        assert float(new(step)) == float(old(step)) and in_torch(step) == pytest.approx(float(old(step)), abs=1e-7)
    with pytest.raises(ConfigError, match="warmup_epochs"):
        make_schedule(schedule_config("cosine", -1.0), 10)


@pytest.mark.slow
def test_label_smoothing_loss_by_hand_and_as_pytorch():
    logits = jnp.array([[2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    log_p = jax.nn.log_softmax(logits)[0]
    by_hand = -((0.9 + 0.1 / 7) * log_p[0] + (0.1 / 7) * (log_p.sum() - log_p[0]))
    assert float(training_loss(logits, jnp.array([0]), 0.1)) == pytest.approx(float(by_hand), rel=1e-6)
    assert float(training_loss(logits, jnp.array([0]), 0.0)) == pytest.approx(float(-log_p[0]), rel=1e-6)
    many = jax.random.normal(jax.random.key(0), (16, 7))
    labels = jnp.arange(16) % 7
    in_torch = F.cross_entropy(torch.tensor(many.tolist()), torch.tensor(labels.tolist()), label_smoothing=0.1)
    assert float(training_loss(many, labels, 0.1)) == pytest.approx(float(in_torch), rel=1e-5)


@pytest.mark.slow
def test_mixup_blends_pairs_of_images_and_their_losses():
    config = Config().apply_overrides(["train.batch_size=8", "optim.schedule=constant", "data.mixup=0.4"])
    images = jax.random.uniform(jax.random.key(0), (8, 1, 48, 48))
    labels = jnp.arange(8) % 7
    state, steps = init_state(config, 1)
    _, out = steps.train(state, images, labels)
    root = keys.root_key(config.train.seed)
    weight, partner = mixup_pairs(keys.step_key(root, "mixup", 0), 0.4, 8)  # step 0's draws of each stream
    assert 0.0 < float(weight) < 1.0 and sorted(partner.tolist()) == list(range(8))
    key = keys.step_key(root, "dropout", 0)
    model = initial_model(config)
    model.train()
    logits = model(as_nhwc(weight * images + (1 - weight) * images[partner]), rngs=nnx.Rngs(dropout=key))
    expected = weight * training_loss(logits, labels, 0.0) + (1 - weight) * training_loss(logits, labels[partner], 0.0)
    assert float(out["loss"]) == pytest.approx(8 * float(expected), rel=1e-4)


def narrow_resnet_config(**overrides) -> Config:
    config = Config()
    config.apply_overrides(["model.name=resnet18", "model.width=0.125", *[f"{k}={v}" for k, v in overrides.items()]])
    return config


@pytest.mark.slow
def test_weight_decay_mask_decays_kernels_only_in_both_frameworks():
    config = narrow_resnet_config(
        **{"optim.name": "sgd", "optim.learning_rate": 1.0, "optim.momentum": 0.0, "optim.weight_decay": 0.1}
    )
    params = nnx.state(create_model(config.model, 0), nnx.Param)
    mask = nnx.to_pure_dict(decays(params))
    assert mask["stem"]["conv"]["kernel"] and mask["classifier"]["kernel"]
    assert not mask["stem"]["norm"]["scale"] and not mask["stem"]["norm"]["bias"] and not mask["classifier"]["bias"]
    tx, _ = make_optimizer(config, steps_per_epoch=10)
    # One compiled update (eagerly, each of the ~60 leaves' shapes compiled its own small programs: 15 s).
    updates = jax.jit(lambda p: tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)[0])(params)
    for is_kernel, update, param in zip(
        jax.tree.leaves(decays(params)), jax.tree.leaves(updates), jax.tree.leaves(params), strict=True
    ):
        update, param = np.asarray(update), np.asarray(param)
        assert np.allclose(update, -0.1 * param) if is_kernel else not update.any()
    kernel, bias = torch.nn.Parameter(torch.ones(3, 3)), torch.nn.Parameter(torch.ones(3))
    optimizer, _ = make_torch_optimizer(config, [kernel, bias], 10)
    assert [(len(g["params"]), g["weight_decay"]) for g in optimizer.param_groups] == [(1, 0.1), (1, 0.0)]


def test_ema_update_math_and_decay_ramp():
    assert float(ema_decay_at(0.999, jnp.array(0))) == pytest.approx(0.1)
    assert float(ema_decay_at(0.999, jnp.array(5))) == pytest.approx(6 / 15)
    assert float(ema_decay_at(0.999, jnp.array(100_000))) == pytest.approx(0.999)
    ema = {"params": {"w": jnp.array([1.0, 2.0])}, "model_state": {"mean": jnp.array(4.0), "count": jnp.array(3)}}
    current = {"params": {"w": jnp.array([3.0, 0.0])}, "model_state": {"mean": jnp.array(0.0), "count": jnp.array(7)}}
    new = update_ema(ema, current, jnp.array(0.9))
    assert new["params"]["w"].tolist() == pytest.approx([0.9 * 1 + 0.1 * 3, 0.9 * 2])
    assert float(new["model_state"]["mean"]) == pytest.approx(3.6) and int(new["model_state"]["count"]) == 7


@pytest.mark.slow
def test_ema_follows_the_weights_and_is_what_selected_weights_gives():
    config = Config().apply_overrides(["train.ema_decay=0.5", "train.batch_size=4", "optim.learning_rate=1e-3"])
    state, steps = init_state(config, steps_per_epoch=2)
    assert isinstance(state, EmaTrainState)
    initial = jax.tree.map(jnp.copy, state.params)
    images = jax.random.uniform(jax.random.key(1), (4, 1, 48, 48))
    state, _ = steps.train(state, images, jnp.array([0, 1, 2, 3]))
    decay = float(ema_decay_at(0.5, jnp.array(0)))  # 0.1 at the first update
    expected = jax.tree.map(lambda old, new: decay * old + (1 - decay) * new, initial, state.params)
    assert all(
        bool(jnp.allclose(a, b, atol=1e-6))
        for a, b in zip(jax.tree.leaves(state.ema["params"]), jax.tree.leaves(expected))
    )
    chosen = selected_weights(state)
    assert chosen.params is state.ema["params"] and chosen.model_state is state.ema["model_state"]
    plain, _ = init_state(Config(), steps_per_epoch=2)
    assert type(plain) is TrainState and selected_weights(plain) is plain


@pytest.mark.slow
def test_ema_weights_are_validated_saved_as_best_and_reported(tiny_zip, tmp_path):
    config = tiny_config(tiny_zip, tmp_path, **{"train.epochs": 1, "train.ema_decay": 0.9, "optim.learning_rate": 1e-3})
    results = training.train(config)
    assert results["weights"] == "ema" and results["tta"] == "flip"
    assert {"test_accuracy", "test_accuracy_tta", "val_accuracy_tta"} <= set(results)
    like, steps = init_state(config, 1)
    checkpoints = RunCheckpoints(config.run_dir, ema=True)
    try:
        latest, _ = checkpoints.restore("latest", as_saved(like))
        best, _ = checkpoints.restore("best", as_saved(like))
    finally:
        checkpoints.close()
    latest, best = from_saved(latest, like.key), from_saved(best, like.key)
    same = lambda a, b: all(bool((x == y).all()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
    assert same(best.params, latest.ema["params"]) and not same(best.params, latest.params)
    public_test = load_splits(config)["PublicTest"]
    assert evaluate_split(best.weights, steps.eval, public_test, 16)["accuracy"] == results["val_accuracy"]


class Tripwire:
    """Stands in for PrivateTest: any use before the epoch loop has returned fails the test."""

    def __init__(self, split, loop_done: list[bool]) -> None:
        self._split, self._loop_done = split, loop_done

    def _check(self) -> None:
        assert self._loop_done, "PrivateTest was read before training ended"

    def __getattr__(self, name):
        self._check()
        return getattr(self._split, name)

    def __len__(self) -> int:
        self._check()
        return len(self._split)


@pytest.mark.slow
def test_private_test_is_read_only_after_the_epochs_by_the_final_evaluation(tiny_zip, tmp_path, monkeypatch):
    loop_done: list[bool] = []
    real_load, real_run_epochs, real_reported = training.load_dataset, loop.run_epochs, training.reported_split
    reads: list[int] = []

    def load_with_tripwire(config):
        dataset = real_load(config)
        return FER2013({**dataset.splits, "PrivateTest": Tripwire(dataset["PrivateTest"], loop_done)}, dataset.source)

    def run_epochs_then_open(*args, **kwargs):
        out = real_run_epochs(*args, **kwargs)
        loop_done.append(True)
        return out

    def reported_once(config, dataset):
        reads.append(len(loop_done))
        return real_reported(config, dataset)

    monkeypatch.setattr(training, "load_dataset", load_with_tripwire)
    # The data check compares every split's pixels by design (it feeds nothing to training or selection);
    # tests/test_training.py and tests/test_datacheck.py cover it.
    monkeypatch.setattr(training, "check_for_run", lambda *args, **kwargs: None)
    monkeypatch.setattr(loop, "run_epochs", run_epochs_then_open)
    monkeypatch.setattr(training, "reported_split", reported_once)
    results = training.train(tiny_config(tiny_zip, tmp_path))
    assert reads == [1]  # one read, after the loop
    assert results["selected_on"] == "PublicTest" and results["reported_on"] == "PrivateTest"
    assert results["test_images"] == 14


def test_averaged_accuracy_is_flip_tta():
    plain = jnp.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    mirrored = jnp.array([[0.0, 3.0], [0.0, 1.0], [1.0, 0.0]])
    labels = jnp.array([1, 1, 0])
    assert averaged_accuracy([plain], labels) == pytest.approx(2 / 3)
    assert averaged_accuracy([plain, mirrored], labels) == 1.0  # face 0: (0.88 + 0.05) / 2 < (0.12 + 0.95) / 2


@pytest.mark.slow
def test_random_erasing_matches_torchvision_in_distribution():
    """Erased-pixel fraction, how often an image is erased, and where: JAX against torchvision's RandomErasing."""
    count, probability = 3000, 0.5
    white = jnp.full((count, 48, 48), 255, jnp.uint8)
    params = sample_erasing(jax.random.key(3), count, 48, 48, probability)
    ours = erase(white, **params) == 0
    torch.manual_seed(3)
    transform = v2.RandomErasing(p=probability, scale=ERASING_SCALE, ratio=ERASING_RATIO, value=0)
    theirs = torch.stack([transform(torch.full((1, 48, 48), 255, dtype=torch.uint8))[0] for _ in range(count)]) == 0
    ours_any, theirs_any = ours.any(axis=(1, 2)), theirs.flatten(1).any(1)
    assert float(ours_any.mean()) == pytest.approx(float(theirs_any.float().mean()), abs=0.04)
    ours_area = ours.mean(axis=(1, 2))[ours_any]
    theirs_area = theirs.float().mean((1, 2))[theirs_any]
    assert float(ours_area.mean()) == pytest.approx(float(theirs_area.mean()), abs=0.01)  # ~0.17, std ~0.09
    assert float(ours_area.min()) >= 0.015 and float(ours_area.max()) <= 0.34
    where_ours = ours[ours_any].mean(0)
    where_theirs = jnp.asarray(theirs[theirs_any].float().mean(0).numpy())
    assert float(jnp.abs(where_ours - where_theirs).mean()) < 0.02  # per-pixel rates ~0.1-0.3 from ~1500 images each
    rows = ours[ours_any].any(axis=2).sum(1) / ours[ours_any].any(axis=1).sum(1)  # height / width
    theirs_rows = theirs[theirs_any].any(2).sum(1) / theirs[theirs_any].any(1).sum(1)
    assert float(jnp.log(rows).mean()) == pytest.approx(float(torch.log(theirs_rows.float()).mean()), abs=0.08)


@pytest.mark.slow
def test_erasing_is_in_both_pipelines_and_off_leaves_the_affine_draws_unchanged():
    faces = jax.random.randint(jax.random.key(0), (64, 48, 48), 1, 256).astype(jnp.uint8)
    key = jax.random.key(5)
    plain = augment(key, faces, DataConfig())
    assert (plain == affine(faces, **sample_params(key, 64, 48, DataConfig()))).all()
    erased = augment(key, faces, DataConfig(erasing=1.0))
    changed = erased != plain
    assert bool((erased[changed] == 0).all()) and 0.6 < float(changed.any(axis=(1, 2)).mean()) <= 1.0
    assert any(
        isinstance(t, v2.RandomErasing) and t.p == 0.25 for t in train_transform(DataConfig(erasing=0.25)).transforms
    )
    assert not any(isinstance(t, v2.RandomErasing) for t in train_transform(DataConfig()).transforms)


def test_pytorch_baseline_refuses_what_it_does_not_mirror(tmp_path):
    for key in ("train.ema_decay=0.99", "data.mixup=0.2"):
        config = Config().apply_overrides([key, f"run_dir={tmp_path / 'run'}"])
        with pytest.raises(ConfigError, match="does not mirror"):
            train_torch(config)


@pytest.mark.slow
def test_width_multiplier():
    narrow = create_model(narrow_resnet_config().model, 0)
    assert count_params(narrow) < count_params(create_model(narrow_resnet_config(**{"model.width": 0.25}).model, 0))
    assert narrow.classifier.in_features == 64
    with pytest.raises(ConfigError, match="width"):
        create_model(Config().apply_overrides(["model.width=0.5"]).model, 0)


@pytest.mark.slow
@pytest.mark.parametrize("name, model", [("sota_resnet18", "resnet18"), ("sota_vgg_bn", "vgg_bn")])
def test_sota_configs_and_their_quick_versions(name, model):
    _, module = configs.load(name)
    full = module.get_config()
    assert full.model.name == model and full.data.pipeline == "device" and full.model.compute_dtype == "bfloat16"
    assert full.train.ema_decay > 0 and full.optim.label_smoothing > 0 and full.data.erasing > 0
    assert full.optim.warmup_epochs > 0 and full.optim.weight_decay > 0 and full.optim.nesterov
    assert "python -m experiments.run " + name in module.__doc__ and "NOT MEASURED YET" in module.__doc__
    make_optimizer(full, steps_per_epoch=224)
    quick = experiment_config(module, True, None, [])
    assert quick.model.width < 1 and quick.data.train_limit == 2048 and quick.train.epochs == 2
    state, _ = init_state(quick, steps_per_epoch=32)
    assert isinstance(state, EmaTrainState)


def test_the_ablation_command_shown_runs_every_variant():
    one = "python -m experiments.ablation cpu_best --only '+ EMA 0.999' --out 'a b.json' --continue"
    assert whole_command(one) == "python -m experiments.ablation cpu_best --out 'a b.json' --continue"


def test_ablation_variants_are_valid_configs():
    _, module = configs.load("sota_resnet18")
    base = module.get_config().apply_overrides(SMALL_SCALE)
    variants = variant_configs(base, VARIANTS)
    assert variants["recipe"] == base and variants["- EMA"].train.ema_decay == 0
    assert variants["none of these"].optim.label_smoothing == 0 and variants["none of these"].data.erasing == 0
    assert len({slug(name) for name in VARIANTS}) == len(VARIANTS)
    row = {"val_accuracy_tta": 0.51, "best_epoch": 3, "last_train_accuracy": 0.6, "seconds": 10.0}
    recipe = {**row, "variant": "recipe", "seed": 0, "val_accuracy": 0.5}
    assert "| recipe | 0.5000 | +0.0000 | 0.5100 | 3 | 0.6000 | 10 |" in format_table([recipe])
    table = format_table(
        [
            recipe,
            {**row, "variant": "recipe (seed 1)", "seed": 1, "val_accuracy": 0.48},
            {**row, "variant": "- shift (seed 1)", "seed": 1, "val_accuracy": 0.49},
        ]
    )
    assert "| recipe | 0 | 0.5000 | +0.0000 | 0.5100 | 3 | 0.6000 | 10 |" in table
    assert "| recipe (seed 1) | 1 | 0.4800 | +0.0000 |" in table
    assert "| - shift (seed 1) | 1 | 0.4900 | +0.0100 |" in table


@pytest.mark.skipif(not (OLD_FORMAT_RUN / "checkpoints" / "best").is_dir(), reason="the old seed CNN run is not here")
def test_a_checkpoint_from_before_ema_still_restores():
    config, weights, record = restore_weights(OLD_FORMAT_RUN)
    assert set(weights) == {"params", "model_state"} and record["best_epoch"] >= 1 and config.train.ema_decay == 0
