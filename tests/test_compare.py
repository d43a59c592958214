"""The framework comparison on the tiny fixture: both frameworks, the ratios, and matching run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_jax import compare as compare_frameworks
from fer_jax.files import read_jsonl
from fer_jax.train.tensorboard_log import event_files
from tests.fixtures import tiny_run_overrides


def test_help_explains_the_measurements(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        compare_frameworks.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in ("--seeds", "--quick", "--set", "PrivateTest", "images/s", "peak memory"):
        assert word in text


@pytest.mark.slow
def test_compare_writes_both_frameworks_and_ratios(
    tiny_zip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [
        "--quick",
        "--data",
        str(tiny_zip),
        *tiny_run_overrides(tmp_path / "cache"),
        "--epochs",
        "2",
        "--seeds",
        "1",
        "--out",
        "out/compare.json",
    ]
    assert compare_frameworks.main(argv) == 0

    report = json.loads(Path("out/compare.json").read_text())
    assert Path("out/compare.png").is_file()
    assert report["argv"] == argv
    assert report["settings"]["quick"] is True and report["settings"]["init"] == "shared"
    assert report["settings"]["epochs"] == 2 and report["settings"]["seeds"] == [0]
    assert report["settings"]["train_images"] == 28
    assert set(report["versions"]) >= {"jax", "flax", "torch"}
    assert set(report["frameworks"]) == {"jax", "pytorch"}
    for framework in ("jax", "pytorch"):
        (run,) = report["frameworks"][framework]["runs"]
        assert run["epochs"] == 2 and len(run["val_accuracy_curve"]) == 2
        assert run["train_images_per_s"] > 0 and run["eval_images_per_s"] > 0 and run["peak_memory_bytes"] > 0
        assert report["frameworks"][framework]["summary"]["test_accuracy"]["mean"] == run["test_accuracy"]
    ratios = report["ratios"]
    for name in (
        "train_throughput_ratio_jax_over_torch",
        "eval_throughput_ratio_jax_over_torch",
        "test_accuracy_ratio_jax_over_torch",
        "peak_memory_ratio_jax_over_torch",
    ):
        assert name in ratios
    assert ratios["train_throughput_ratio_jax_over_torch"] > 0

    jax_dir, torch_dir = (Path(report["frameworks"][f]["runs"][0]["run_dir"]) for f in ("jax", "pytorch"))
    assert jax_dir.name == "jax" and torch_dir.name == "pytorch" and jax_dir.parent.name == "seed0"
    assert event_files(jax_dir) and event_files(torch_dir)  # one `tensorboard --logdir` overlays seed0/{jax,pytorch}
    for jax_row, torch_row in zip(read_jsonl(jax_dir / "metrics.jsonl"), read_jsonl(torch_dir / "metrics.jsonl")):
        assert set(jax_row) == set(torch_row)
    jax_results = json.loads((jax_dir / "results.json").read_text())
    torch_results = json.loads((torch_dir / "results.json").read_text())
    assert set(torch_results) - set(jax_results) <= {"framework"}
    assert set(jax_results) - set(torch_results) <= {"framework"}
