"""The benchmark's bookkeeping (no timings are asserted): warm-up and timed blocks, per-repeat ratios."""

from __future__ import annotations

import pytest

from experiments import bench


def test_timed_steps_compile_then_warm_up_then_time_every_step_in_blocks() -> None:
    calls: list[int] = []
    args = bench.build_parser().parse_args(["--steps", "10", "--warmup-steps", "3"])
    result = bench.timed_steps(calls.append, lambda out: out, args, batch=64)
    assert calls == [1, 3, 3, 3, 2, 2]
    assert len(result["train_step_block_images_per_s"]) == bench.TIMED_BLOCKS
    assert result["compile_seconds"] >= 0 and result["train_step_images_per_s"] > 0


def test_paired_ratios_divide_within_each_repeat() -> None:
    jax_runs = [{"train_step_images_per_s": 200.0, "fast_epoch_seconds": 9.0}, {"train_step_images_per_s": 100.0}]
    torch_runs = [{"train_step_images_per_s": 100.0, "epoch_seconds": 10.0}, {"train_step_images_per_s": 80.0}]
    paired = bench.paired_ratios({"jax": jax_runs, "pytorch": torch_runs})
    train = paired["train_throughput_ratio_jax_over_torch"]
    assert (train["median"], train["min"], train["max"], train["n"]) == (pytest.approx(1.625), 1.25, 2.0, 2)
    assert paired["fast_epoch_seconds_ratio_jax_over_torch"]["median"] == pytest.approx(0.9)
    assert paired["eval_throughput_ratio_jax_over_torch"]["n"] == 0
    assert bench.paired_ratios({"jax": jax_runs}) == {}
