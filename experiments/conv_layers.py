"""Per-layer convolution speed: XLA's convolution under XLA:CPU's library flags, and PyTorch's.

    python -m experiments.conv_layers                       # results/conv_layers_<device>.json
    python -m experiments.conv_layers --only vgg_bn.conv3a,seed_cnn.conv2 --repeats 5
    python -m experiments.conv_layers --flag-sets default,project,ynn-dot,no-ynn,onednn --dtype bfloat16
    python -m experiments.conv_layers --flags threads=--xla_cpu_multi_thread_eigen=false
    python -m experiments.conv_layers --flag-sets project --dtype bfloat16 --matmul   # what the bf16 units give

The layers are the 3x3 convolutions of `vgg_bn` at width 0.375 (padding 1) and of `seed_cnn`
(VALID), on NHWC inputs and HWIO kernels of their real sizes at batch `--batch`. For each layer a
worker times the jitted forward `lax.conv_general_dilated(x, w)` and the forward plus both
gradients (`jax.vjp`, returning the output too: a convolution is linear, so without it XLA would
drop the forward pass): 2 warm-up calls, then `--iters` timed calls, of which it keeps the median.
(`results/conv_layers_cpu_kernels.json` also has rows of the hand-written Winograd and im2col kernels
that the models used before this benchmark showed XLA's convolution as fast; see its `git_commit`.)
PyTorch's channels-last `conv2d` on the same shapes gives a reference row (`--no-torch` leaves it
out; bfloat16 runs it under autocast).

XLA reads $XLA_FLAGS once, when its first backend starts, so each flag set runs in its own worker
process: `--repeats` workers per flag set (and for PyTorch), in reverse order on every other
repeat. Importing `experiments` appends the project's flags (`PROJECT_XLA_FLAGS`) to $XLA_FLAGS,
which would turn the `default` set into `project`; so a worker replaces $XLA_FLAGS with exactly its
set's string before its first JAX computation (and refuses to run if a backend has started already).
The table gives median [min, max] over repeats; the JSON holds every timed call.

`--matmul` adds two rows per layer to each JAX worker, to tell XLA's convolution from the CPU's matrix units
(AVX512-BF16 or AMX run bfloat16 products with float32 accumulation): 'matmul', the layer's three matrix
products alone on ready-made im2col matrices (output, input-patch gradient, weight gradient; float32
accumulation, the result in `--dtype`), an upper bound for any convolution built on them; and 'im2col', a whole
convolution made of them (patches from 9 shifted slices, the input gradient as the im2col convolution of the
output gradient with the flipped kernel), which adds what building the patches costs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from experiments.bench import run_worker, spread, worker_environment, worker_or_report_main
from fer_jax.environment import PROJECT_XLA_FLAGS

LAYERS: dict[str, tuple[int, int, int, int]] = {
    "vgg_bn.conv1a": (48, 1, 24, 1),
    "vgg_bn.conv1b": (48, 24, 24, 1),
    "vgg_bn.conv2a": (24, 24, 48, 1),
    "vgg_bn.conv2b": (24, 48, 48, 1),
    "vgg_bn.conv3a": (12, 48, 96, 1),
    "vgg_bn.conv3b": (12, 96, 96, 1),
    "vgg_bn.conv4a": (6, 96, 192, 1),
    "vgg_bn.conv4b": (6, 192, 192, 1),
    "seed_cnn.conv1": (48, 1, 32, 0),
    "seed_cnn.conv2": (46, 32, 64, 0),
    "seed_cnn.conv3": (22, 64, 128, 0),
    "seed_cnn.conv4": (10, 128, 128, 0),
}
"""Layer -> (input side, input channels, output channels, padding) of a 3x3 stride-1 convolution."""
FLAG_SETS = {
    "default": "",
    "project": " ".join(PROJECT_XLA_FLAGS),
    "ynn-dot": "--xla_cpu_experimental_ynn_fusion_type=dot",
    "no-ynn-conv": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
    "no-ynn": "--xla_cpu_experimental_ynn_fusion_type=",
    "onednn": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution "
    "--xla_cpu_experimental_onednn_custom_call=true",
}
"""Built-in flag sets: name -> the whole of $XLA_FLAGS in its workers. 'default' is XLA's own (jaxlib 0.10.2 sends
convolutions, dots and reductions to YNNPACK), 'project' what `fer-jax` runs with, 'ynn-dot' the issue's first try
(YNNPACK for dots only, a value that replaces the default list), 'no-ynn-conv' the default list less convolutions,
'no-ynn' no YNNPACK at all, 'onednn' oneDNN custom calls for what XLA hands them."""
DATA = "synthetic: standard-normal inputs, kernels and cotangents drawn with jax.random / torch.randn (no dataset read)"
"""What the layers are timed on: a convolution's speed does not depend on its values."""
XLA = "xla"
MATMUL = "matmul"
IM2COL = "im2col"
NHWC_HWIO = ("NHWC", "HWIO", "NHWC")
TORCH = "torch"
WARMUP_CALLS = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.conv_layers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--batch", type=int, default=64, help="images per call (default: %(default)s)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument(
        "--flag-sets",
        default="default,project",
        help=f"comma-separated, of {', '.join(FLAG_SETS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--flags", action="append", default=[], metavar="NAME=XLA_FLAGS", help="define a flag set (repeatable)"
    )
    parser.add_argument("--only", help="comma-separated layer names (default: all)")
    parser.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True, help="PyTorch reference rows")
    parser.add_argument(
        "--matmul", action="store_true", help="add the 'matmul' and 'im2col' rows to each JAX worker (see above)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="workers per flag set (default: %(default)s)")
    parser.add_argument("--iters", type=int, default=10, help="timed calls per measurement (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="results JSON (default: results/conv_layers_<device>.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    return parser


def comma_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def flag_sets(args: argparse.Namespace) -> dict[str, str]:
    """The flag sets to run, by name: `--flag-sets` picks from the built-in ones and `--flags`, which also run."""
    from fer_jax.config import ConfigError

    given = dict(entry.split("=", 1) for entry in args.flags if "=" in entry)
    if len(given) != len(args.flags) or TORCH in given:
        raise ConfigError(f"--flags takes NAME=XLA_FLAGS, NAME not {TORCH!r}; got {args.flags}")
    known = {**FLAG_SETS, **given}
    names = [*dict.fromkeys([*comma_list(args.flag_sets), *given])]
    if unknown := [n for n in names if n not in known]:
        raise ConfigError(f"unknown flag set(s) {unknown}; known: {', '.join(known)}")
    return {name: known[name] for name in names}


def layer_names(args: argparse.Namespace) -> list[str]:
    from fer_jax.config import ConfigError

    names = comma_list(args.only) if args.only else list(LAYERS)
    if unknown := [n for n in names if n not in LAYERS]:
        raise ConfigError(f"unknown layer(s) {unknown}; known: {', '.join(LAYERS)}")
    return names


def forward_flops(name: str, batch: int) -> int:
    side, cin, cout, padding = LAYERS[name]
    return 2 * batch * (side + 2 * padding - 2) ** 2 * cin * cout * 9


def measure(calls: dict[str, Callable[[], Any]], sync: Callable[[Any], Any], iters: int) -> dict[str, list[float]]:
    """Milliseconds of `iters` calls of each function, after `WARMUP_CALLS` untimed ones (the first compiles)."""
    times: dict[str, list[float]] = {}
    for key, call in calls.items():
        for _ in range(WARMUP_CALLS):
            sync(call())
        times[key] = []
        for _ in range(iters):
            start = time.perf_counter()
            sync(call())
            times[key].append(1e3 * (time.perf_counter() - start))
    return times


def jax_functions(pad: int, numbers: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The jitted forward `conv(x, w)` and forward plus both gradients `(x, w, g) -> (out, dx, dw)`."""
    import jax

    def forward(x: jax.Array, w: jax.Array) -> jax.Array:
        return jax.lax.conv_general_dilated(x, w, (1, 1), ((pad, pad), (pad, pad)), dimension_numbers=numbers)

    def forward_backward(x: jax.Array, w: jax.Array, g: jax.Array) -> tuple[jax.Array, ...]:
        out, pullback = jax.vjp(forward, x, w)
        return out, *pullback(g)

    return jax.jit(forward), jax.jit(forward_backward)


def im2col_patches(x: Any, pad: int) -> Any:
    """(batch x out_side^2, 9 x channels): each output pixel's 3x3 neighbourhood of the zero-padded NHWC `x`."""
    import jax.numpy as jnp

    batch, side, _, channels = x.shape
    out_side = side + 2 * pad - 2
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    shifted = [padded[:, i : i + out_side, j : j + out_side, :] for i in range(3) for j in range(3)]
    return jnp.concatenate(shifted, axis=-1).reshape(batch * out_side**2, 9 * channels)


def float32_product(a: Any, b: Any) -> Any:
    """`a @ b` accumulated in float32 (how AVX512-BF16 and AMX run bfloat16 products), returned in `a`'s dtype."""
    import jax.numpy as jnp

    return jnp.dot(a, b, preferred_element_type=jnp.float32).astype(a.dtype)


def matmul_functions() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The jitted products of a layer on im2col matrices: `(p, w) -> out` and `(p, w, g) -> (out, dp, dw)`."""
    import jax

    def forward_backward(p: jax.Array, w: jax.Array, g: jax.Array) -> tuple[jax.Array, ...]:
        return float32_product(p, w), float32_product(g, w.T), float32_product(p.T, g)

    return jax.jit(float32_product), jax.jit(forward_backward)


def im2col_functions(pad: int) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The jitted im2col convolution `(x, w) -> out` and `(x, w, g) -> (out, dx, dw)` on NHWC / HWIO arrays."""
    import jax
    import jax.numpy as jnp

    def convolve(x: jax.Array, w: jax.Array, pad: int) -> jax.Array:
        out_side = x.shape[1] + 2 * pad - 2
        rows = float32_product(im2col_patches(x, pad), w.reshape(-1, w.shape[-1]))
        return rows.reshape(x.shape[0], out_side, out_side, w.shape[-1])

    def forward_backward(x: jax.Array, w: jax.Array, g: jax.Array) -> tuple[jax.Array, ...]:
        patches = im2col_patches(x, pad)  # built once, for the output and the weight gradient
        out = float32_product(patches, w.reshape(-1, w.shape[-1])).reshape(g.shape)
        dw = float32_product(patches.T, g.reshape(-1, w.shape[-1])).reshape(w.shape)
        dx = convolve(g, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2), 2 - pad)
        return out, dx, dw

    return jax.jit(partial(convolve, pad=pad)), jax.jit(forward_backward)


def jax_worker(args: argparse.Namespace) -> dict[str, Any]:
    """`time_jax_layers` with exactly the flag set `args.worker` in $XLA_FLAGS."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise RuntimeError("a JAX backend started before the worker set $XLA_FLAGS")
    os.environ["XLA_FLAGS"] = flag_sets(args)[args.worker]
    return {"xla_flags": os.environ["XLA_FLAGS"], "layers": time_jax_layers(args)}


def time_jax_layers(args: argparse.Namespace) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Layer -> 'xla' (and with `--matmul` 'matmul', 'im2col') -> milliseconds of each timed forward and forward +
    backward call."""
    import jax

    keys = jax.random.split(jax.random.key(0), 3)
    layers: dict[str, Any] = {}
    for name in layer_names(args):
        side, cin, cout, pad = LAYERS[name]
        out_side = side + 2 * pad - 2
        x = jax.random.normal(keys[0], (args.batch, side, side, cin), args.dtype)
        w = jax.random.normal(keys[1], (3, 3, cin, cout), args.dtype)
        g = jax.random.normal(keys[2], (args.batch, out_side, out_side, cout), args.dtype)
        numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, NHWC_HWIO)
        forward, forward_backward = jax_functions(pad, numbers)
        calls = {"forward_ms": partial(forward, x, w), "forward_backward_ms": partial(forward_backward, x, w, g)}
        layers[name] = {XLA: measure(calls, jax.block_until_ready, args.iters)}
        if args.matmul:
            p = im2col_patches(x, pad)
            out_grad = g.reshape(-1, cout)
            w_rows = w.reshape(-1, cout)
            product, products = matmul_functions()
            calls = {
                "forward_ms": partial(product, p, w_rows),
                "forward_backward_ms": partial(products, p, w_rows, out_grad),
            }
            layers[name][MATMUL] = measure(calls, jax.block_until_ready, args.iters)
            forward, forward_backward = im2col_functions(pad)
            calls = {"forward_ms": partial(forward, x, w), "forward_backward_ms": partial(forward_backward, x, w, g)}
            layers[name][IM2COL] = measure(calls, jax.block_until_ready, args.iters)
    return layers


def torch_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Time PyTorch's channels-last `conv2d` on every layer (autocast for bfloat16)."""
    import torch
    import torch.nn.functional as F

    from fer_jax.baseline.evaluation import torch_device

    device = torch_device()
    torch.manual_seed(0)
    channels_last = {"device": device, "memory_format": torch.channels_last}
    autocast = partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    def sync(out: Any) -> Any:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    def forward(x: torch.Tensor, w: torch.Tensor, pad: int) -> torch.Tensor:
        with torch.no_grad(), autocast():
            return F.conv2d(x, w, padding=pad)

    def forward_backward(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor, pad: int) -> tuple[torch.Tensor, ...]:
        with autocast():
            out = F.conv2d(x, w, padding=pad)
        return out, *torch.autograd.grad(out, (x, w), g)

    layers: dict[str, Any] = {}
    for name in layer_names(args):
        side, cin, cout, pad = LAYERS[name]
        out_side = side + 2 * pad - 2
        x = torch.randn(args.batch, cin, side, side).to(**channels_last).requires_grad_()
        w = torch.randn(cout, cin, 3, 3).to(**channels_last).requires_grad_()
        g = torch.randn(args.batch, cout, out_side, out_side, dtype=getattr(torch, args.dtype)).to(**channels_last)
        calls = {
            "forward_ms": partial(forward, x, w, pad),
            "forward_backward_ms": partial(forward_backward, x, w, g, pad),
        }
        layers[name] = {TORCH: measure(calls, sync, args.iters)}
    return {"torch_threads": torch.get_num_threads(), "layers": layers}


def summarize(runs: dict[str, list[dict[str, Any]]], batch: int) -> list[dict[str, Any]]:
    """One row per layer, impl and flag set: median [min, max] over repeats of each worker's median."""
    rows = []
    for flags, workers in runs.items():
        for layer, by_impl in workers[0]["layers"].items():
            for impl in by_impl:
                row: dict[str, Any] = {"layer": layer, "impl": impl, "flags": "-" if flags == TORCH else flags}
                for key in ("forward_ms", "forward_backward_ms"):
                    row[key] = spread([statistics.median(w["layers"][layer][impl][key]) for w in workers])
                flops = forward_flops(layer, batch)
                row["forward_gflop_per_s"] = flops / row["forward_ms"]["median"] / 1e6
                row["forward_backward_gflop_per_s"] = 3 * flops / row["forward_backward_ms"]["median"] / 1e6
                rows.append(row)
    return sorted(rows, key=lambda row: list(LAYERS).index(row["layer"]))


def best(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per layer, the fastest row by median forward and by median forward + backward."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        for key in ("forward_ms", "forward_backward_ms"):
            fastest = out.setdefault(row["layer"], {}).get(key)
            if fastest is None or row[key]["median"] < fastest["ms"]:
                out[row["layer"]][key] = {"impl": row["impl"], "flags": row["flags"], "ms": row[key]["median"]}
    return out


def format_table(report: dict[str, Any]) -> str:
    def cell(stats: dict[str, float]) -> str:
        return f"{stats['median']:.2f} [{stats['min']:.2f}, {stats['max']:.2f}]"

    settings = report["settings"]
    lines = [
        f"{report['machine']} | batch {settings['batch']} {settings['dtype']} | {settings['repeats']} repeats "
        f"x {settings['iters']} calls",
        "| layer | impl | flags | fwd ms | fwd+bwd ms | fwd+bwd GFLOP/s |",
        "|---|---|---|---|---|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['layer']} | {row['impl']} | {row['flags']} | {cell(row['forward_ms'])} | "
            f"{cell(row['forward_backward_ms'])} | {row['forward_backward_gflop_per_s']:.1f} |"
        )
    lines += ["", "| layer | fastest fwd | ms | fastest fwd+bwd | ms |", "|---|---|---:|---|---:|"]
    for layer, fastest in report["best"].items():
        fwd, both = fastest["forward_ms"], fastest["forward_backward_ms"]
        lines.append(
            f"| {layer} | {fwd['impl']} / {fwd['flags']} | {fwd['ms']:.2f} | "
            f"{both['impl']} / {both['flags']} | {both['ms']:.2f} |"
        )
    return "\n".join(lines)


def conv_layers(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from fer_jax.compare import device_slug, machine_fields
    from fer_jax.files import write_json

    sets, names = flag_sets(args), layer_names(args)
    workers = [*sets, *([TORCH] if args.torch else [])]
    runs: dict[str, list[dict[str, Any]]] = {worker: [] for worker in workers}
    for repeat in range(args.repeats):
        for worker in workers if repeat % 2 == 0 else workers[::-1]:
            print(f"[conv_layers] repeat {repeat + 1}/{args.repeats}: {worker}", flush=True)
            env = worker_environment(huge_pages=True)
            if worker in sets:
                env["XLA_FLAGS"] = sets[worker]
            runs[worker].append(run_worker("experiments.conv_layers", worker, argv, env))
    rows = summarize(runs, args.batch)
    report = {
        **machine_fields(),
        "command": "python -m experiments.conv_layers " + shlex.join(argv),
        "data": DATA,
        "dataset_sha256": None,
        "flag_sets": sets,
        "settings": {key: getattr(args, key) for key in ("batch", "dtype", "torch", "matmul", "repeats", "iters")}
        | {"warmup_calls": WARMUP_CALLS},
        "layers": {
            name: dict(zip(("side", "in_channels", "out_channels", "padding"), LAYERS[name]))
            | {"forward_flops": forward_flops(name, args.batch)}
            for name in names
        },
        "rows": rows,
        "best": best(rows),
        "runs": runs,
    }
    out = args.out or Path(f"results/conv_layers_{device_slug()}.json")
    write_json(out, report)
    print(format_table(report))
    print(f"Wrote {out}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return worker_or_report_main(
        "experiments.conv_layers",
        build_parser(),
        argv,
        lambda args: torch_worker(args) if args.worker == TORCH else jax_worker(args),
        conv_layers,
    )


if __name__ == "__main__":
    sys.exit(main())
