"""Where the train step's time goes: convolutions, dense layers, BatchNorm, pooling, dropout, augmentation...

    python -m experiments.profile_step --data ../shared/datasets/fer2013.zip   # results/profile_step_<device>.json
    python -m experiments.profile_step --models seed_cnn --steps 5 --set model.compute_dtype=bfloat16

Each model (a name of `experiments.throughput.CANDIDATES`) runs in a fresh worker process with
huge-page malloc, as the benchmarks run. It builds the on-device pipeline's fused step
(`Steps.train_chunk`: gather, augment, forward, gradients, optax update; `model.compute_dtype=float32`
unless `--set` says otherwise) on the first 4 batches of Training faces of `--data` (the archive's sha256
goes into the report), or without `--data` on random uint8 48x48 faces and labels (the step's work does
not depend on the pixels). It compiles the step, runs 2 untimed calls, then traces
`--steps` steps with `jax.profiler` (`--trace-dir` keeps the traces, for Perfetto or TensorBoard, and
the step's optimized HLO, whose instruction names the trace shows).

While it runs, the layers' calls run inside `jax.named_scope`s (`layer_scopes`), which only name their
ops in the HLO metadata. Each op the trace shows (a fusion or an op of the optimized HLO) takes the
category of its heaviest instruction (matmul > reduce/gather > elementwise, then the larger output, then
a named one, then the root). A conv or dense layer's matmul is a weight gradient when neither operand
comes from the weights (`weight_sides`), else an input gradient under `transpose(...)`, else the forward
pass; its other ops (bias, padding, layout copies) are 'other', a gradient's if the heaviest op or the
root is under `transpose(...)`. Unnamed gathers are the batch's gather ('augment'), ops that only convert
dtypes 'convert', other unnamed ops 'other' (ReLU, copies, keys); ops XLA made without metadata (partial
reductions, layout copies) take their users' category.

XLA:CPU runs independent ops on its 2 threads at once, and some ops (its own convolutions, some dots)
asynchronously: their event is only the launch, the work ends at their 'end:' event. So an op counts
from its event's start to its 'end:' event ("in flight"), each moment of the traced calls' wall time
shared evenly among the ops in flight then (a loop counts as its body's ops); the moments with none are
'no op in flight' (dispatch, waits). The categories add up to the wall time per step, which gives
images/s. 'events ms' is the sum of the ops' event durations (all threads), which misses async work.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import json
import math
import re
import shlex
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from experiments.bench import REPORTED_ENVIRONMENT, run_worker, worker_environment, worker_or_report_main
from experiments.throughput import CANDIDATES

SCOPES = ("conv", "dense", "batchnorm", "maxpool", "dropout", "augment", "optimizer", "loss")
PARTS = ("forward", "input grad", "weight grad", "other (fwd)", "other (grad)")
IDLE = "no op in flight"
"""Wall time of the traced calls when no op ran: dispatch, waits, loop control."""
CATEGORIES = (*(f"{layer} {part}" for layer in SCOPES[:2] for part in PARTS), *SCOPES[2:], "convert", "other", IDLE)
MATMULS = {"dot", "convolution"}
HEAVY = {"reduce", "reduce-window", "select-and-scatter", "gather", "scatter", "sort", "custom-call"}
VIEWS = {"parameter", "constant", "bitcast", "get-tuple-element", "tuple"}
CONTROL_FLOW = {"while", "conditional"}
"""Ops whose time is that of the ops they run, which the trace shows themselves (not so a `call`: XLA:CPU
runs a small called computation as one op)."""
INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.*?) ([\w-]+)\((.*)$")
WARMUP_CALLS = 2


class Instruction(NamedTuple):
    name: str
    opcode: str
    dtype: str
    dims: tuple[int, ...]
    operands: tuple[str, ...]
    calls: str | None
    """The computation a fusion calls, or a while loop's body."""
    index: int
    """A parameter's number, a get-tuple-element's index."""
    op_name: str


def parse_hlo(text: str) -> tuple[dict[str, list[Instruction]], str]:
    """The instructions of an HLO module's text by computation, and the entry computation's name."""
    computations: dict[str, list[Instruction]] = {}
    entry = ""
    for line in text.splitlines():
        if line.endswith("{") and not line.startswith((" ", "HloModule")):
            name = line.removeprefix("ENTRY ").split()[0].lstrip("%")
            entry = name if line.startswith("ENTRY") else entry
            current = computations.setdefault(name, [])
        elif match := INSTRUCTION.match(line):
            name, shape, opcode, rest = match.groups()
            array = re.search(r"(\w+)\[([\d,]*)\]", shape)
            dtype, dims = (array[1], tuple(int(d) for d in array[2].split(",") if d)) if array else ("", ())
            operands, _, attributes = rest.partition(")")
            calls = re.search(r"(?:calls|body)=%([\w.-]+)", attributes)
            found = re.search(r"index=(\d+)", attributes)
            index = int(operands) if opcode == "parameter" else int(found[1]) if found else 0
            op_name = found[1] if (found := re.search(r'op_name="([^"]*)"', attributes)) else ""
            names = tuple(re.findall(r"%([\w.-]+)", operands))
            current.append(Instruction(name, opcode, dtype, dims, names, calls and calls[1], index, op_name))
    return computations, entry


def weight_sides(computations: dict[str, list[Instruction]], entry: str) -> set[str]:
    """The values computed from the step's float inputs of rank >= 2 (weights, optimizer state) and constants
    alone, through fusions and loops: the weight side of a layer's matmuls, which no weight gradient has."""
    kinds: dict[str, str] = {}  # 'w': from weights (and constants), 'c': from constants alone, 'd': from data

    def walk(computation: str, bound: list[str] | None, loop_body: bool = False) -> None:
        """Instructions come after their operands; `bound`: the kinds of a fusion's operands or a loop's state."""
        parameters = set()
        for i in computations[computation]:
            if i.opcode == "parameter":
                weight = i.dtype in ("f32", "bf16", "f16") and len(i.dims) > 1
                kinds[i.name] = ("w" if weight else "d") if bound is None else "d" if loop_body else bound[i.index]
                parameters.add(i.name)
            elif loop_body and i.opcode == "get-tuple-element" and i.operands[0] in parameters:
                kinds[i.name] = bound[i.index] if bound and i.index < len(bound) else "d"
            else:
                sources = {kinds.get(o, "d") for o in i.operands} - {"c"}
                kinds[i.name] = "c" if not sources else "w" if sources == {"w"} else "d"
            if i.opcode == "fusion" and i.calls:
                walk(i.calls, [kinds.get(o, "d") for o in i.operands])
            elif i.opcode == "while" and i.calls in computations:
                init = next(j for j in computations[computation] if j.name == i.operands[0])
                walk(i.calls, [kinds.get(o, "d") for o in init.operands] if init.opcode == "tuple" else [], True)

    walk(entry, None)
    return {name for name, kind in kinds.items() if kind == "w"}


def scope_of(op_name: str) -> str | None:
    """The innermost of `SCOPES` in an op's metadata name, e.g. 'conv' in 'jit(f)/transpose(jvp(conv))/dot_general'."""
    return next((t for t in reversed(re.findall(r"[\w.-]+", op_name)) if t in SCOPES), None)


def categorize(hlo_text: str) -> dict[str, str | None]:
    """The category (`CATEGORIES`) of every instruction of an optimized HLO module; None for control flow."""
    computations, entry = parse_hlo(hlo_text)
    weights = weight_sides(computations, entry)

    def inner(instruction: Instruction) -> list[Instruction]:
        if instruction.opcode != "fusion" or instruction.calls is None:
            return [instruction]
        return [leaf for i in computations[instruction.calls] for leaf in inner(i)]

    def category(instruction: Instruction) -> str | None:
        if instruction.opcode in CONTROL_FLOW:
            return None
        name = instruction.op_name  # a fusion's is its root's
        work = [i for i in inner(instruction) if i.opcode not in VIEWS] or [instruction]
        if all(i.opcode == "convert" for i in work):
            return "convert"
        rank = {i.name: 3 * (i.opcode in MATMULS) + 2 * (i.opcode in HEAVY) for i in work}
        top = max(work, key=lambda i: (rank[i.name], math.prod(i.dims), bool(scope_of(i.op_name)), i.op_name == name))
        op_name = top.op_name or name
        scope = scope_of(op_name) or ("conv" if top.opcode == "convolution" else None)
        backward = "transpose(" in op_name + name  # the heaviest op's, or the root's (e.g. a ReLU's gradient)
        if scope in ("conv", "dense"):
            if top.opcode not in MATMULS:
                return f"{scope} other ({'grad' if backward else 'fwd'})"
            if not weights & set(top.operands):
                return f"{scope} weight grad"
            return f"{scope} {'input grad' if backward else 'forward'}"
        if scope or not op_name:
            return scope or ""  # "": made by XLA, decided by its users below
        return {"gather": "augment", "convert": "convert"}.get(top.opcode, "other")

    categories = {i.name: category(i) for instructions in computations.values() for i in instructions}
    for instructions in computations.values():
        for i in reversed(instructions):
            if categories[i.name] == "":
                users = [categories[u.name] for u in instructions if i.name in u.operands]
                categories[i.name] = next((c for c in users if c), "other")
    return categories


def scoped(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    import jax

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        with jax.named_scope(name):
            return function(*args, **kwargs)

    return call


@contextlib.contextmanager
def layer_scopes() -> Iterator[None]:
    """Runs each layer kind's calls, the augmentation, the loss and the optimizer inside a `jax.named_scope`
    of `SCOPES` (which only names their ops in the HLO metadata), and restores them after."""
    from unittest import mock

    import optax
    from flax import nnx

    from fer_jax.models import layers, resnet, seed_cnn, vgg_bn
    from fer_jax.train import steps

    def make_optimizer(*args: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
        tx, schedule = original(*args)
        return optax.GradientTransformation(tx.init, scoped(tx.update, "optimizer")), schedule

    original = steps.make_optimizer
    targets = [(nnx.Conv, "__call__", "conv"), (nnx.Linear, "__call__", "dense")]
    targets += [(nnx.BatchNorm, "__call__", "batchnorm"), (layers.Dropout, "__call__", "dropout")]
    targets += [(m, "max_pool_2x2", "maxpool") for m in (vgg_bn, seed_cnn, resnet) if hasattr(m, "max_pool_2x2")]
    targets += [(steps, "augment", "augment"), (steps, "training_loss", "loss"), (optax, "apply_updates", "optimizer")]
    with contextlib.ExitStack() as stack:
        for target, attribute, name in targets:
            stack.enter_context(mock.patch.object(target, attribute, scoped(getattr(target, attribute), name)))
        stack.enter_context(mock.patch.object(steps, "make_optimizer", make_optimizer))
        yield


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.profile_step",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models", default="vgg_bn x0.375,seed_cnn", help="throughput candidates (default: %(default)s)"
    )
    parser.add_argument("--data", help="FER-2013 archive, folder or CSV whose Training faces to use (default: random)")
    parser.add_argument("--steps", type=int, default=10, help="traced train steps per model (default: %(default)s)")
    parser.add_argument("--batch", type=int, help="train.batch_size (default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides (repeatable)")
    parser.add_argument("--trace-dir", type=Path, help="keep the traces here, a folder per model")
    parser.add_argument("--out", type=Path, help="results JSON (default: results/profile_step_<device>.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    return parser


def model_config(args: argparse.Namespace, name: str) -> Any:
    from fer_jax.config import Config, ConfigError

    if name not in CANDIDATES:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(CANDIDATES)}")
    config = Config()
    config.data.pipeline = "device"
    batch = [f"train.batch_size={args.batch}"] if args.batch else []
    data = [f"data.source={args.data}"] if args.data else []
    return config.apply_overrides(["model.compute_dtype=float32", *args.set, *CANDIDATES[name], *batch, *data])


def traced_run(config: Any, calls: int, trace_dir: Path) -> tuple[str, list[dict[str, Any]], float]:
    """The step's optimized HLO, the trace events of `calls` traced calls after the warm-up, and their wall seconds."""
    import jax
    import numpy as np

    from fer_jax.train import parallel
    from fer_jax.train.steps import init_state, steps_per_dispatch

    batch, rng = config.train.batch_size, np.random.default_rng(0)
    state, steps = init_state(config, 100)
    if config.data.source:
        from fer_jax.data.fer2013 import load_fer2013

        training = load_fer2013(config.data.source, config.data.cache_dir)["Training"]
        pixels, targets = training.images[: 4 * batch].numpy(), training.labels[: 4 * batch].numpy().astype(np.int32)
    else:
        pixels, targets = rng.integers(0, 256, (4 * batch, 48, 48), np.uint8), rng.integers(0, 7, 4 * batch, np.int32)
    images = jax.device_put(pixels, parallel.replicated(steps.mesh))
    labels = jax.device_put(targets, parallel.replicated(steps.mesh))
    order = np.arange(steps_per_dispatch(config) * batch).reshape(-1, batch) % (4 * batch)
    (indices,) = parallel.shard_batch(steps.mesh, order, axis=1)
    compiled = steps.train_chunk.lower(state, images, labels, indices).compile()
    for _ in range(WARMUP_CALLS):
        state, out = compiled(state, images, labels, indices)
    jax.block_until_ready(out)
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
        start = time.perf_counter()
        for _ in range(calls):
            state, out = compiled(state, images, labels, indices)
        jax.block_until_ready(out)
        wall = time.perf_counter() - start
    path = max(trace_dir.glob("plugins/profile/*/perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
    events = json.loads(gzip.decompress(path.read_bytes()))["traceEvents"]
    hlo = compiled.as_text()
    (trace_dir / "train_chunk.hlo.txt").write_text(hlo)
    return hlo, [e for e in events if e.get("ph") == "X"], wall


def op_times(events: list[dict[str, Any]], module: str, skip: set[str]) -> tuple[Counter[str], Counter[str]]:
    """Per op of `module` (but `skip`), in µs: the time it was in flight, from its event's start to its 'end:'
    event (XLA:CPU runs some ops, e.g. its own convolutions, asynchronously after a short event), each moment
    shared evenly among the ops in flight then; and the sum of its events' durations."""
    starts: dict[str, list[float]] = defaultdict(list)
    durations: Counter[str] = Counter()
    for event in events:
        if event.get("args", {}).get("hlo_module") == module and event["name"] not in skip:
            starts[event["name"]].append(event["ts"])
            durations[event["name"]] += event["dur"]
    ends: dict[str, list[float]] = defaultdict(list)
    for event in events:
        if event["name"].startswith("end: ") and event["name"][5:] in starts:
            ends[event["name"][5:]].append(event["ts"])
    edges = sorted(
        (moment, step, op)
        for op in starts
        for start, end in zip(sorted(starts[op]), sorted(ends[op]))
        for moment, step in ((start, 1), (end, -1))
    )
    flight: Counter[str] = Counter()
    active: Counter[str] = Counter()
    last = 0.0
    for now, step, op in edges:
        concurrent = sum(active.values())
        for name, count in active.items():
            flight[name] += (now - last) * count / concurrent
        active[op] += step
        active = +active  # drops the ops no longer in flight
        last = now
    return flight, durations


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Profile one model's train step in this process."""
    from fer_jax.train.steps import steps_per_dispatch

    config = model_config(args, args.worker)
    per_call = steps_per_dispatch(config)
    calls = max(1, math.ceil(args.steps / per_call))
    with layer_scopes(), tempfile.TemporaryDirectory() as tmp:
        trace_dir = args.trace_dir / re.sub(r"\W+", "_", args.worker) if args.trace_dir else Path(tmp)
        hlo, events, wall = traced_run(config, calls, trace_dir)
    categories, steps, module = categorize(hlo), calls * per_call, hlo.split(maxsplit=2)[1].rstrip(",")
    op_names = {i.name: i.op_name for instructions in parse_hlo(hlo)[0].values() for i in instructions}
    flight, durations = op_times(events, module, {op for op, category in categories.items() if category is None})
    wall_ms, ms = 1e3 * wall / steps, {op: us / 1e3 / steps for op, us in flight.items()}
    per_category: Counter[str] = Counter()
    events_category: Counter[str] = Counter()
    for op, us in durations.items():
        per_category[categories.get(op, "other")] += ms.get(op, 0.0)
        events_category[categories.get(op, "other")] += us / 1e3 / steps
    per_category[IDLE] = max(0.0, wall_ms - sum(per_category.values()))
    return {
        "config": config.to_dict(),
        "steps": steps,
        "traced_calls": len({e["args"]["run_id"] for e in events if e.get("args", {}).get("hlo_module") == module}),
        "wall_ms_per_step": wall_ms,
        "images_per_s": steps * config.train.batch_size / wall,
        "events_ms_per_step": sum(events_category.values()),
        "categories": {
            c: {"ms_per_step": per_category[c], "share": per_category[c] / wall_ms, "events_ms": events_category[c]}
            for c in CATEGORIES
        },
        "top_ops": [
            {"op": op, "category": categories.get(op, "other"), "ms_per_step": t, "op_name": op_names.get(op, "")}
            for op, t in sorted(ms.items(), key=lambda item: -item[1])[:20]
        ],
    }


def format_table(name: str, row: dict[str, Any]) -> str:
    lines = [
        f"{name}: batch {row['config']['train']['batch_size']}, {row['config']['model']['compute_dtype']}, "
        f"{row['steps']} steps traced | wall {row['wall_ms_per_step']:.1f} ms/step, {row['images_per_s']:.0f} img/s"
        f" | ops' events {row['events_ms_per_step']:.1f} ms/step (all threads)",
        "| category | ms per step | share % | events ms |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {c} | {v['ms_per_step']:.2f} | {100 * v['share']:.1f} | {v['events_ms']:.2f} |"
        for c, v in row["categories"].items()
    ]
    return "\n".join(lines)


def profile(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from fer_jax.compare import device_slug, machine_fields
    from fer_jax.data.cache import source_sha256
    from fer_jax.files import write_json

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    for name in names:
        model_config(args, name)  # unknown names and bad overrides fail before any worker starts
    models, env = {}, worker_environment(huge_pages=True)
    for name in names:
        print(f"[profile_step] {name}", flush=True)
        models[name] = run_worker("experiments.profile_step", name, argv, env)
        print(format_table(name, models[name]), flush=True)
    report = {
        **machine_fields(),
        "command": "python -m experiments.profile_step " + shlex.join(argv),
        "data": f"the first 4 batches of Training faces of {args.data}"
        if args.data
        else "synthetic: random uint8 48x48 images and labels, 4 batches (no dataset read)",
        "dataset_sha256": source_sha256(args.data) if args.data else None,
        "settings": {"steps": args.steps, "batch": args.batch, "overrides": args.set, "warmup_calls": WARMUP_CALLS},
        "worker_environment": {name: env.get(name) for name in REPORTED_ENVIRONMENT},
        "models": models,
    }
    out = args.out or Path(f"results/profile_step_{device_slug()}.json")
    write_json(out, report)
    print(f"Wrote {out}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return worker_or_report_main("experiments.profile_step", build_parser(), argv, worker, profile)


if __name__ == "__main__":
    sys.exit(main())
