"""Checks against the real Kaggle archive (FER2013_ZIP; a failure, not a skip, under CI=true)."""

import jax.numpy as jnp
import pytest

from fer_jax.config import Config
from fer_jax.data.fer2013 import EMOTIONS, load_fer2013
from fer_jax.train.evaluation import evaluate_split
from fer_jax.train.steps import init_state
from fer_jax.train.trainer import _train_epoch, epoch_updates

pytestmark = pytest.mark.real_data

# From the dataset's README: per class in the challenge order of EMOTIONS.
EXPECTED = {
    "Training": dict(angry=3995, disgust=436, fear=4097, happy=7215, sad=4830, surprise=3171, neutral=4965),
    "PublicTest": dict(angry=467, disgust=56, fear=496, happy=895, sad=653, surprise=415, neutral=607),
    "PrivateTest": dict(angry=491, disgust=55, fear=528, happy=879, sad=594, surprise=416, neutral=626),
}


@pytest.fixture(scope="module")
def dataset(fer2013_zip):
    """Decoded once per test session, into its cache (the notebooks and the data check read the same)."""
    return load_fer2013(fer2013_zip)


def test_split_and_class_counts(dataset):
    assert {name: len(dataset[name]) for name in EXPECTED} == {
        "Training": 28709,
        "PublicTest": 3589,
        "PrivateTest": 3589,
    }
    for name, counts in EXPECTED.items():
        assert dataset[name].class_counts() == [counts[e] for e in EMOTIONS], name
        assert dataset[name].images.shape[1:] == (48, 48)


def test_one_epoch_on_real_faces_lowers_the_loss(dataset):
    config = Config()
    config.apply_overrides(["train.batch_size=32", "data.augment=false", "optim.schedule=constant"])
    train_split = dataset["Training"].subset(640, seed=0)
    state, steps = init_state(config, len(train_split) // 32)
    before = evaluate_split(state.weights, steps.eval, train_split, 128)["loss"]
    state, metrics = _train_epoch(state, epoch_updates(config, steps, train_split), config, 1, len(train_split))
    after = evaluate_split(state.weights, steps.eval, train_split, 128)["loss"]
    assert jnp.isfinite(metrics["loss"])
    assert after < before - 0.05, (before, after)
