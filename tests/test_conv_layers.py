"""The per-layer convolution benchmark: its measurements' shape, rows and table (no timings are asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import conv_layers
from fer_jax.config import ConfigError

TINY = ["--batch", "2", "--only", "seed_cnn.conv4", "--iters", "1", "--repeats", "1"]


def test_rows_take_each_workers_median_and_rank_the_fastest() -> None:
    def run(forward: list[float], both: list[float], impl: str = "xla") -> dict:
        return {"layers": {"seed_cnn.conv4": {impl: {"forward_ms": forward, "forward_backward_ms": both}}}}

    runs = {
        "default": [run([1.0, 3.0, 9.0], [6.0]), run([5.0], [8.0])],
        "project": [run([4.0], [2.0])],
        conv_layers.TORCH: [run([2.0], [3.0], impl="torch")],
    }
    rows = conv_layers.summarize(runs, batch=2)
    assert [(row["impl"], row["flags"]) for row in rows] == [("xla", "default"), ("xla", "project"), ("torch", "-")]
    assert rows[0]["forward_ms"] == {"median": 4.0, "min": 3.0, "max": 5.0, "n": 2}
    flops = conv_layers.forward_flops("seed_cnn.conv4", 2)
    assert flops == 2 * 2 * 8 * 8 * 128 * 128 * 9
    assert rows[1]["forward_backward_gflop_per_s"] == pytest.approx(3 * flops / 2.0 / 1e6)
    best = conv_layers.best(rows)["seed_cnn.conv4"]
    assert best["forward_ms"] == {"impl": "torch", "flags": "-", "ms": 2.0}
    assert best["forward_backward_ms"] == {"impl": "xla", "flags": "project", "ms": 2.0}
    settings = {"batch": 2, "dtype": "float32", "repeats": 2, "iters": 3}
    table = conv_layers.format_table({"machine": "cpu", "settings": settings, "rows": rows, "best": {}})
    assert "| seed_cnn.conv4 | xla | default | 4.00 [3.00, 5.00] | 7.00 [6.00, 8.00] |" in table


@pytest.mark.slow
def test_workers_time_a_layer_forward_and_backward() -> None:
    args = conv_layers.build_parser().parse_args(TINY)
    jax_layers = conv_layers.time_jax_layers(args)
    torch_layers = conv_layers.torch_worker(args)["layers"]
    for times in (jax_layers["seed_cnn.conv4"]["xla"], torch_layers["seed_cnn.conv4"][conv_layers.TORCH]):
        assert {key: len(ms) for key, ms in times.items()} == {"forward_ms": 1, "forward_backward_ms": 1}
        assert min(times["forward_ms"] + times["forward_backward_ms"]) > 0


@pytest.mark.parametrize("pad", [0, 1])
def test_the_im2col_convolution_matches_xlas_with_both_gradients(pad: int) -> None:
    import jax

    keys = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(keys[0], (2, 7, 7, 3))
    w = jax.random.normal(keys[1], (3, 3, 3, 5))
    g = jax.random.normal(keys[2], (2, 5 + 2 * pad, 5 + 2 * pad, 5))
    numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, conv_layers.NHWC_HWIO)
    forward, forward_backward = conv_layers.jax_functions(pad, numbers)
    im2col_forward, im2col_forward_backward = conv_layers.im2col_functions(pad)
    assert jax.numpy.allclose(im2col_forward(x, w), forward(x, w), atol=1e-5)
    for ours, xlas in zip(im2col_forward_backward(x, w, g), forward_backward(x, w, g), strict=True):
        assert ours.shape == xlas.shape and jax.numpy.allclose(ours, xlas, atol=1e-4)
    _, products = conv_layers.matmul_functions()
    rows = conv_layers.im2col_patches(x, pad)
    out, patch_grad, weight_grad = products(rows, w.reshape(27, 5), g.reshape(-1, 5))
    assert jax.numpy.allclose(weight_grad.reshape(w.shape), forward_backward(x, w, g)[2], atol=1e-4)
    assert out.shape == (rows.shape[0], 5) and patch_grad.shape == rows.shape


def test_flag_sets_and_layers_are_checked() -> None:
    parse = conv_layers.build_parser().parse_args
    assert conv_layers.flag_sets(parse(["--flag-sets", "default", "--flags", "mine=--xla_a=1 --xla_b=2"])) == {
        "default": "",
        "mine": "--xla_a=1 --xla_b=2",
    }
    with pytest.raises(ConfigError, match="unknown flag set"):
        conv_layers.flag_sets(parse(["--flag-sets", "nope"]))
    with pytest.raises(ConfigError, match="NAME=XLA_FLAGS"):
        conv_layers.flag_sets(parse(["--flags", "torch=--xla_a=1"]))
    with pytest.raises(ConfigError, match="unknown layer"):
        conv_layers.layer_names(parse(["--only", "nope"]))


@pytest.mark.slow
def test_main_runs_a_worker_with_exactly_its_flag_set(tmp_path: Path) -> None:
    out = tmp_path / "conv.json"
    assert conv_layers.main([*TINY, "--flag-sets", "default", "--no-torch", "--matmul", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["flag_sets"] == {"default": ""}
    assert report["runs"]["default"][0]["xla_flags"] == ""  # the project's flags were not appended
    assert {"machine", "cpu_features", "command", "settings", "layers", "rows", "best", "dataset_sha256"} <= set(report)
    assert report["dataset_sha256"] is None and "no dataset" in report["data"]
    assert [row["impl"] for row in report["rows"]] == ["xla", "matmul", "im2col"]
    assert min(row["forward_backward_ms"]["median"] for row in report["rows"]) > 0
