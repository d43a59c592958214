"""The candidate-throughput experiment's worker and table (no timings are asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments import throughput


@pytest.mark.slow
def test_worker_measures_a_candidate_and_the_table_derives_epochs(tiny_zip: Path) -> None:
    args = throughput.build_parser().parse_args(
        ["--data", str(tiny_zip), "--blocks", "2", "--calls", "2", "--set", "train.batch_size=8"]
    )
    args.worker = "seed_cnn"
    run = throughput.worker(args)
    assert run["parameters"] == 2_345_607
    assert 150e6 < run["forward_flops_per_image"] < 160e6  # 77.5M multiply-adds of convolutions and dense layers
    assert len(run["block_images_per_s"]) == 2 and min(run["block_images_per_s"]) > 0
    row = throughput.summarize([run, {**run, "block_images_per_s": [100.0, 300.0]}])
    assert row["images_per_s"]["n"] == 4 and row["images_per_s"]["max"] >= 300.0
    assert row["epochs_in_2_hours"] * row["epoch_seconds"] == pytest.approx(throughput.BUDGET_SECONDS)
    report = {
        "machine": "cpu",
        "config": {"train": {"batch_size": 8}},
        "settings": {"repeats": 2, "blocks": 2},
        "candidates": {"seed_cnn": row},
    }
    assert "| seed_cnn | 2,345,607 | 155 |" in throughput.format_table(report)
