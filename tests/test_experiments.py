"""Experiments as configs: every config loads, the runner writes seed runs and a summary, the table reads them.

Also the model-inspection helpers (`fer_jax.eval.inspect`) that notebook 04 uses.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from experiments import configs, run, table
from fer_jax.config import Config, ConfigError, ModelConfig
from fer_jax.models.zoo import create_model
from tests.fixtures import tiny_run_overrides

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", configs.available())
def test_every_config_module_loads_and_returns_a_config(name: str) -> None:
    loaded_name, module = configs.load(name)
    assert loaded_name == name
    config = module.get_config()
    assert isinstance(config, Config)
    assert "Command:" in module.__doc__
    assert "python -m experiments.run" in module.__doc__ or "python -m experiments.ablation" in module.__doc__
    assert "Expected runtime" in module.__doc__ and "Expected result" in module.__doc__
    Config.from_dict(config.to_dict())  # every value fits its field
    for item in getattr(module, "QUICK_OVERRIDES", []):
        Config().apply_overrides([item])


def test_the_required_experiments_exist() -> None:
    assert {"seed_cnn_adam", "seed_cnn_sgd", "seed_cnn_no_augment", "compare_frameworks"} <= set(configs.available())
    sgd = configs.load("seed_cnn_sgd")[1].get_config()
    assert (sgd.optim.name, sgd.optim.learning_rate, sgd.optim.momentum, sgd.optim.nesterov, sgd.optim.schedule) == (
        "sgd",
        0.01,
        0.9,
        True,
        "cosine",
    )
    assert configs.load("seed_cnn_no_augment")[1].get_config().data.augment is False
    assert configs.load("seed_cnn_adam")[1].get_config() == Config().apply_overrides(["data.pipeline=device"])
    full_run = re.search(r"experiments\.run (\w+)", (ROOT / "Makefile").read_text())  # `make train FULL=1`
    assert full_run and full_run.group(1) == "seed_cnn_onecycle"
    onecycle = configs.load("seed_cnn_onecycle")[1].get_config()
    assert (onecycle.model.name, onecycle.optim.schedule, onecycle.optim.label_smoothing) == ("seed_cnn", "linear", 0.1)


def test_help_lists_the_configs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in ("--quick", "--seeds", "--set", "--data", "seed_cnn_sgd", "compare_frameworks", "summary.json"):
        assert word in text


def test_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run.main(["no_such_experiment"]) == 2
    assert run.main(["seed_cnn_adam", "--set", "train.nope=1"]) == 2
    assert run.main(["seed_cnn_adam", "--data", str(tmp_path / "missing.zip")]) == 2
    assert run.main(["seed_cnn_adam", "--seeds", "2", "--results", "results/x.json"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 4 and all(line.startswith("experiments.run: error:") for line in errors)
    assert "seed_cnn_adam" in errors[0] and "missing.zip" in errors[2] and "--seeds 1" in errors[3]
    assert not Path("results").exists()


@pytest.mark.slow
def test_runner_writes_seed_runs_and_summary_and_the_table_reads_them(
    tiny_zip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [
        "seed_cnn_sgd",
        "--data",
        str(tiny_zip),
        *tiny_run_overrides(tmp_path / "cache"),
        "--set",
        "train.epochs=1",
        "--seeds",
        "2",
    ]
    assert run.main(argv) == 0

    (summary_path,) = Path("runs/seed_cnn_sgd").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["experiment"] == "seed_cnn_sgd" and summary["complete"] is True
    assert summary["seeds"] == [0, 1] and summary["quick"] is False
    assert summary["command"].startswith("python -m experiments.run seed_cnn_sgd")
    assert summary["machine"].startswith("cpu") or ":" in summary["machine"]
    assert summary["config"]["optim"]["name"] == "sgd"
    assert [r["seed"] for r in summary["runs"]] == [0, 1]
    for seed, entry in zip((0, 1), summary["runs"]):
        run_dir = summary_path.parent / f"seed{seed}"
        assert Path(entry["run_dir"]) == run_dir
        results = json.loads((run_dir / "results.json").read_text())
        assert results["test_accuracy"] == entry["test_accuracy"]
        assert Config.load(run_dir / "config.json").train.seed == seed
        assert (run_dir / "checkpoints" / "best").is_dir()
    accuracies = [r["test_accuracy"] for r in summary["runs"]]
    assert summary["test_accuracy"]["n"] == 2
    assert math.isclose(summary["test_accuracy"]["mean"], sum(accuracies) / 2)
    assert math.isclose(summary["test_accuracy"]["std"], abs(accuracies[0] - accuracies[1]) / math.sqrt(2))
    assert summary["val_accuracy"]["n"] == 2 and summary["val_accuracy"]["std"] is not None

    # a training result in results/ (as `fer-jax train --results` writes) joins the table; other JSON does not
    Path("results").mkdir()
    Path("results/seed_cnn.json").write_text(
        json.dumps(
            {
                "test_accuracy": 0.65,
                "val_accuracy": 0.64,
                "epochs": 15,
                "seconds_per_epoch": 240.0,
                "device": "cpu: test machine",
                "command": "fer-jax train --results results/seed_cnn.json",
            }
        )
    )
    Path("results/compare_cpu.json").write_text(json.dumps({"command": "fer-jax compare", "frameworks": {}}))
    assert table.main(["--out", "results/table.md"]) == 0
    lines = Path("results/table.md").read_text().splitlines()
    assert lines[0].startswith("| experiment | PrivateTest acc")
    assert len(lines) == 4  # header, alignment, seed_cnn_sgd, seed_cnn
    sgd_row, result_row = lines[2], lines[3]
    mean, std = summary["test_accuracy"]["mean"], summary["test_accuracy"]["std"]
    assert sgd_row.startswith("| seed_cnn_sgd |") and f"{mean:.4f} ± {std:.4f} (n=2)" in sgd_row
    assert summary["machine"] in sgd_row and "`python -m experiments.run seed_cnn_sgd" in sgd_row
    assert result_row.startswith("| seed_cnn |") and "0.6500 (n=1)" in result_row and "240.0" in result_row
    assert Path("results/table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_without_sources_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        table.main(
            [
                "--runs",
                str(tmp_path / "runs"),
                "--results",
                str(tmp_path / "results"),
                "--out",
                str(tmp_path / "table.md"),
            ]
        )
        == 1
    )
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "table.md").exists()


def test_table_rows_per_framework_of_a_comparison(tmp_path: Path) -> None:
    stats = {"mean": 0.5, "std": None, "n": 1}
    summary = {
        "experiment": "compare_frameworks",
        "command": "python -m experiments.run compare_frameworks",
        "machine": "cpu: x",
        "quick": True,
        "complete": True,
        "frameworks": {
            f: {
                "machine": f"{f} machine",
                "test_accuracy": stats,
                "val_accuracy": stats,
                "epochs": stats,
                "seconds_per_epoch": stats,
            }
            for f in ("jax", "pytorch")
        },
    }
    path = tmp_path / "runs" / "compare_frameworks" / "20260101-000000" / "summary.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(summary))
    rows = table.collect(tmp_path / "runs", tmp_path / "results")
    assert [row["experiment"] for row in rows] == [
        "compare_frameworks (jax) [quick]",
        "compare_frameworks (pytorch) [quick]",
    ]
    assert [row["machine"] for row in rows] == ["jax machine", "pytorch machine"]


@pytest.mark.slow
def test_saliency_is_input_shaped_and_finite() -> None:
    from fer_jax.eval.inspect import feature_maps, first_layer_filters, most_confused_pairs, saliency_maps

    model = create_model(ModelConfig(), seed=0)
    model.eval()
    images = jax.random.uniform(jax.random.key(1), (3, 1, 48, 48))
    maps = saliency_maps(model, images)
    assert maps.shape == images.shape and bool(jnp.all(jnp.isfinite(maps))) and float(maps.max()) > 0
    assert saliency_maps(model, images[:, 0], classes=[0, 1, 2]).shape == (3, 48, 48)

    features = feature_maps(model, images)
    assert features["conv1"].shape == (3, 46, 46, 32) and features["conv4"].shape == (3, 8, 8, 128)
    assert jnp.allclose(features["logits"], model(images.reshape(3, 48, 48, 1)), atol=1e-5)
    assert first_layer_filters(model).shape == (32, 3, 3)

    matrix = [[5, 3, 0, 0, 0, 0, 1]] + [[0] * 7 for _ in range(6)]
    pairs = most_confused_pairs(matrix, top=2)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("angry", "disgust", 3),
        ("angry", "neutral", 1),
    ]
    assert math.isclose(pairs[0]["share_of_true"], 3 / 9)


def test_ablation_only_with_continue_keeps_the_other_measured_variants(tmp_path: Path, monkeypatch) -> None:
    from experiments import ablation
    from fer_jax.files import write_json
    from fer_jax.train import trainer as training

    def fake_train(config: Config) -> dict:
        Path(config.run_dir).mkdir(parents=True)
        (Path(config.run_dir) / "metrics.jsonl").write_text(json.dumps({"val_accuracy": 0.5, "train_accuracy": 0.4}))
        return {
            "val_accuracy": 0.5,
            "val_accuracy_tta": 0.51,
            "best_epoch": 1,
            "seconds_per_epoch": 1.0,
            "git_commit": "",
            "compute_dtype": "bfloat16",
            "cpu_features": ["avx2", "avx512_bf16"],
        }

    monkeypatch.setattr(training, "train", fake_train)
    out = tmp_path / "search.json"
    first, second = list(configs.load("seed_cnn_search")[1].VARIANTS)[:2]
    earlier = {"variant": first, "val_accuracy": 0.4, "val_accuracy_tta": 0.4, "best_epoch": 5}
    earlier.update(last_train_accuracy=0.3, seconds=60.0)
    write_json(out, {"base_config": "seed_cnn_search", "variants": [earlier]})
    argv = ["seed_cnn_search", "--scale", "none", "--only", second, "--continue", "--out", str(out)]
    assert ablation.main([*argv, "--runs", str(tmp_path / "runs")]) == 0
    rows = json.loads(out.read_text())["variants"]
    assert [row["variant"] for row in rows] == [first, second]  # the third is neither run nor lost
    assert rows[1]["compute_dtype"] == "bfloat16" and rows[1]["cpu_features"] == ["avx2", "avx512_bf16"]


def test_ablation_table_compares_with_the_recipe_of_the_same_seed_or_says_it_has_none() -> None:
    from experiments.ablation import format_table

    def row(variant: str, overrides: list[str], seed: int, accuracy: float) -> dict:
        return {"variant": variant, "overrides": overrides, "seed": seed, "val_accuracy": accuracy}

    rows = [row("wider", ["model.width=0.5"], 0, 0.55), row("recipe", [], 0, 0.5)]
    rows += [row("recipe (seed 1)", ["train.seed=1"], 1, 0.48), row("crop", ["model.input_crop=40"], 2, 0.6)]
    for r in rows:
        r.update(val_accuracy_tta=0.5, best_epoch=1, last_train_accuracy=0.5, seconds=1.0)
    deltas = [line.split(" | ")[3] for line in format_table(rows).splitlines()[2:]]
    assert deltas == ["+0.0500", "+0.0000", "+0.0000", "-"]


def test_time_to_accuracy_accumulates_minutes_and_refuses_mixed_machines(tmp_path: Path) -> None:
    from experiments import time_to_accuracy

    def result(name: str, device: str, seconds: list[float]) -> Path:
        curve = {"seconds": seconds, "val_accuracy": [0.3, 0.5], "train_accuracy": [0.2, 0.4]}
        fields = {"model": name, "device": device, "command": "fer-jax train", "test_accuracy": 0.5}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({**fields, "curve": curve}))
        return path

    out = tmp_path / "tta.json"
    report = time_to_accuracy.time_to_accuracy([result("a", "cpu", [60.0, 120.0]), result("b", "cpu", [30, 30])], out)
    curves = report["curves"]
    assert curves["a (a, 2 epochs)"]["minutes"] == [1.0, 3.0] and curves["b (b, 2 epochs)"]["minutes"] == [0.5, 1.0]
    assert out.with_suffix(".png").stat().st_size > 0 and report["dataset_sha256"] is None
    assert time_to_accuracy.main([str(result("c", "gpu", [1.0, 1.0])), str(result("a", "cpu", [1, 1]))]) == 2
    no_curve = tmp_path / "old.json"
    no_curve.write_text(json.dumps({"model": "seed_cnn"}))
    with pytest.raises(ConfigError, match="no per-epoch 'curve'"):
        time_to_accuracy.curve_of(json.loads(no_curve.read_text()), no_curve)


def test_predict_views_choice_rule():
    from experiments.predict_views import choose, combinations

    def row(nets, tta, views, public):
        return {"nets": list(nets), "tta": tta, "views": views, "PublicTest": public}

    assert len(combinations()) == 9 and (("vgg_bn",), "none") in combinations()
    small_gain = [row(["vgg_bn"], "none", 1, 0.685), row(["vgg_bn"], "flip", 2, 0.689)]
    assert choose(small_gain)["tta"] == "none"  # under 0.5 points: the default stays
    tied = [*small_gain, row(["vgg_bn"], "crops", 10, 0.699), row(["vgg_bn", "seed_cnn"], "flip", 2, 0.698)]
    assert choose(tied)["views"] == 2 and choose(tied)["nets"] == ["vgg_bn", "seed_cnn"]  # within 0.2: cheapest
    tied[-1]["nets"] = ["vgg_bn"]
    tied[-1]["views"] = 12
    assert choose(tied)["tta"] == "crops"


def test_calibration_scores_detected_faces_overall_upright_and_rotated():
    from types import SimpleNamespace

    from experiments.retinaface_calibration import accuracy_by_rotation

    faces = [(None, None, SimpleNamespace(angle=angle)) for angle in (0, 0, 30, -90)]
    assert accuracy_by_rotation([True, False, True, True], faces) == {
        "accuracy_on_detected": 0.75,
        "upright_faces": 0.5,
        "rotated_faces": 1.0,
    }
