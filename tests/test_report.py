"""The evaluation report: metrics against hand-computed values, TTA views, and RUN_DIR/eval/ end to end."""

import json
from pathlib import Path

import jax.numpy as jnp
import pytest

from fer_jax.cli import main
from fer_jax.config import Config
from fer_jax.data.fer2013 import EMOTIONS
from fer_jax.data.views import corner_crop, mirror
from fer_jax.eval.report import classification_metrics, confident_mistakes
from fer_jax.files import write_json
from fer_jax.train.checkpoints import RunCheckpoints
from fer_jax.train.eval_step import build_eval_step
from fer_jax.train.evaluation import evaluate_split, load_splits, tta_views
from fer_jax.train.loop import new_record
from fer_jax.train.restore import restore_weights
from fer_jax.train.steps import init_state


@pytest.mark.slow
def test_metrics_match_hand_computed_values():
    # true 0 0 0 1 1 2, predicted 0 0 1 1 2 2 (class 3 neither true nor predicted):
    # confusion rows [2 1 0 0] [0 1 1 0] [0 0 1 0] [0 0 0 0]
    # precision 2/2, 1/2, 1/2, 0; recall 2/3, 1/2, 1/1, 0
    # F1 2*(1*2/3)/(1+2/3) = 0.8, 0.5, 2*(0.5*1)/1.5 = 2/3, 0; macro-F1 (0.8 + 0.5 + 2/3 + 0) / 4
    metrics = classification_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], num_classes=4)
    assert metrics["confusion_matrix"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    per_class = metrics["per_class"]
    assert [per_class[c]["precision"] for c in "0123"] == pytest.approx([1.0, 0.5, 0.5, 0.0])
    assert [per_class[c]["recall"] for c in "0123"] == pytest.approx([2 / 3, 0.5, 1.0, 0.0])
    assert [per_class[c]["f1"] for c in "0123"] == pytest.approx([0.8, 0.5, 2 / 3, 0.0])
    assert [per_class[c]["support"] for c in "0123"] == [3, 2, 1, 0]
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 4)


@pytest.mark.slow
def test_metrics_name_the_seven_emotions_and_handle_a_class_never_predicted():
    labels = list(range(7)) * 2
    predictions = [3] * 14  # always happy
    metrics = classification_metrics(labels, predictions)
    assert list(metrics["per_class"]) == list(EMOTIONS)
    assert metrics["accuracy"] == pytest.approx(2 / 14)
    happy = metrics["per_class"]["happy"]
    assert (happy["precision"], happy["recall"]) == pytest.approx((2 / 14, 1.0))
    assert happy["f1"] == pytest.approx(2 * (1 / 7) / (1 + 1 / 7))
    assert metrics["per_class"]["angry"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert metrics["macro_f1"] == pytest.approx(happy["f1"] / 7)


def test_confident_mistakes_are_the_wrong_answers_most_sure_first():
    probabilities = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    mistakes = confident_mistakes([0, 0, 1, 1], probabilities)
    assert [(m["index"], m["probability"]) for m in mistakes] == [(1, pytest.approx(0.8)), (2, pytest.approx(0.6))]
    assert (mistakes[0]["true"], mistakes[0]["predicted"]) == ("angry", "disgust")


@pytest.mark.slow
def test_tta_views():
    images = jnp.arange(2 * 48 * 48, dtype=jnp.float32).reshape(2, 1, 48, 48)
    assert (mirror(images)[..., 0] == images[..., 47]).all()
    top_left = corner_crop(0, 0)(images)
    assert top_left.shape == images.shape and top_left[0, 0, 0, 0] == images[0, 0, 0, 0]
    assert [len(v) for v in tta_views(False).values()] == [2]
    assert {k: len(v) for k, v in tta_views(True).items()} == {"flip": 2, "crops": 10}


@pytest.fixture(scope="module")
def untrained_run(tiny_zip, tmp_path_factory) -> Path:
    """A run folder holding an untrained seed CNN as its best checkpoint (no training: fast)."""
    root = tmp_path_factory.mktemp("report")
    config = Config()
    config.data.source = str(tiny_zip)
    config.data.cache_dir = str(root / "cache")
    config.run_dir = str(root / "run")
    config.train.eval_batch_size = 16
    state, _ = init_state(config, 1)
    write_json(Path(config.run_dir) / "config.json", config.to_dict())
    checkpoints = RunCheckpoints(config.run_dir)
    checkpoints.save("best", 1, state, {**new_record(), "best_epoch": 1})
    checkpoints.close()
    return Path(config.run_dir)


@pytest.mark.slow
def test_evaluate_writes_the_report(untrained_run, capsys):
    assert main(["evaluate", str(untrained_run), "--crops"]) == 0
    out = untrained_run / "eval"
    for name in (
        "report.json",
        "confusion_PrivateTest.png",
        "confusion_PublicTest.png",
        "mistakes_PrivateTest.png",
        "mistakes_PublicTest.png",
    ):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    config, weights, _ = restore_weights(untrained_run)
    eval_step = build_eval_step(config.model)
    splits = load_splits(config)
    for name in ("PrivateTest", "PublicTest"):
        split = report["splits"][name]
        assert split["images"] == 14 and set(split["per_class"]) == set(EMOTIONS)
        assert split["accuracy"] == evaluate_split(weights, eval_step, splits[name], 16)["accuracy"]
        assert set(split["tta"]) == {"flip", "crops"}
        assert sum(map(sum, split["confusion_matrix"])) == 14
        for mistake in split["most_confident_mistakes"]:
            assert (
                splits[name].labels[mistake["index"]]
                == EMOTIONS.index(mistake["true"])
                != EMOTIONS.index(mistake["predicted"])
            )
    assert "PrivateTest" in capsys.readouterr().out


def test_evaluate_without_a_best_checkpoint_is_one_line(tmp_path, capsys):
    write_json(tmp_path / "config.json", Config().to_dict())
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no checkpoint yet" in err and "\n" not in err
