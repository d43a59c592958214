"""Collect experiment summaries and training results into one Markdown table and a bar plot.

    python -m experiments.table                       # runs/**/summary.json + results/*.json -> results/table.md, .png
    python -m experiments.table --runs runs --results results --out results/table.md
    python -m experiments.table --readme README.md    # rewrite the README's block from results/*.json

Sources: every summary.json under --runs (written by `python -m experiments.run`; a
compare_frameworks summary gives a row per framework) and every JSON file directly in
--results that is a training result (has "test_accuracy" and "command", e.g. the
results/seed_cnn.json of `fer-jax train --results`). Accuracy is PrivateTest accuracy of
the PublicTest-selected checkpoint, mean ± sample std over seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

COLUMNS = ("experiment", "PrivateTest acc", "PublicTest acc", "epochs", "s/epoch", "machine", "command")


def stat(mean: float | None, std: float | None = None, n: int | None = None) -> dict[str, Any]:
    return {"mean": mean, "std": std, "n": n if n is not None else int(mean is not None)}


def rows_from_summary(summary: dict[str, Any], source: Path) -> list[dict[str, Any]]:
    """One row per framework of a summary.json (one row when it has no frameworks)."""
    variants = summary.get("frameworks") or {"": summary}
    rows = []
    for label, variant in variants.items():
        name = summary["experiment"] + (f" ({label})" if label else "")
        if summary.get("quick"):
            name += " [quick]"
        if not summary.get("complete", True):
            name += " [incomplete]"
        rows.append(
            {
                "experiment": name,
                "test_accuracy": variant["test_accuracy"],
                "val_accuracy": variant["val_accuracy"],
                "epochs": variant["epochs"],
                "seconds_per_epoch": variant["seconds_per_epoch"],
                "machine": variant.get("machine") or summary.get("machine", ""),
                "command": summary.get("command", ""),
                "date": summary.get("started", ""),
                "source": str(source),
            }
        )
    return rows


def row_from_result(result: dict[str, Any], source: Path) -> dict[str, Any]:
    """The row of a single training result (results/<name>.json): one seed."""
    return {
        "experiment": source.stem,
        "test_accuracy": stat(result["test_accuracy"]),
        "val_accuracy": stat(result.get("val_accuracy")),
        "epochs": stat(result.get("epochs")),
        "seconds_per_epoch": stat(result.get("seconds_per_epoch")),
        "machine": result.get("device", ""),
        "command": result["command"],
        "date": "",
        "source": str(source),
    }


def collect(runs: Path, results: Path) -> list[dict[str, Any]]:
    """The table's rows: the summaries under `runs` (in path order, i.e. by experiment and time), then results."""
    rows: list[dict[str, Any]] = []
    for path in sorted(runs.rglob("summary.json")) if runs.is_dir() else []:
        try:
            rows += rows_from_summary(json.loads(path.read_text()), path)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{path}: not a summary written by experiments.run ({type(err).__name__}: {err})"
            ) from None
    for path in sorted(results.glob("*.json")) if results.is_dir() else []:
        try:
            result = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(result, dict) and "test_accuracy" in result and "command" in result:
            rows.append(row_from_result(result, path))
    return rows


def _number(stats: dict[str, Any], fmt: str, with_n: bool = False) -> str:
    if stats.get("mean") is None:
        return "n/a"
    text = format(stats["mean"], fmt)
    if stats.get("std") is not None:
        text += f" ± {format(stats['std'], fmt)}"
    if with_n:
        text += f" (n={stats['n']})"
    return text


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def format_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as one GitHub Markdown table (numbers right-aligned)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "| --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for row in rows:
        cells = [
            _cell(row["experiment"]),
            _number(row["test_accuracy"], ".4f", with_n=True),
            _number(row["val_accuracy"], ".4f"),
            _number(row["epochs"], ".1f" if row["epochs"].get("std") else ".0f"),
            _number(row["seconds_per_epoch"], ".1f"),
            _cell(row["machine"]),
            f"`{_cell(row['command'])}`" if row["command"] else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_rows(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Horizontal bars: PrivateTest accuracy per row, the std over seeds as error bars."""
    from fer_jax.train.plotting import plt, save_figure

    labels = [row["experiment"] for row in rows]
    means = [row["test_accuracy"]["mean"] or 0.0 for row in rows]
    errors = [row["test_accuracy"]["std"] or 0.0 for row in rows]
    figure, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(rows)), constrained_layout=True)
    positions = list(range(len(rows)))[::-1]
    ax.barh(positions, means, xerr=errors, color="C0", capsize=3)
    for position, mean, error, row in zip(positions, means, errors, rows):
        ax.text(mean + error, position, f"  {mean:.3f} (n={row['test_accuracy']['n']})", va="center", fontsize=8)
    ax.set_yticks(positions, labels)
    ax.set_xlim(0, min(1.0, max(m + e for m, e in zip(means + [0.1], errors + [0.0])) * 1.3))
    ax.set(xlabel="PrivateTest accuracy, mean ± std over seeds", title="FER-2013 experiments")
    ax.grid(alpha=0.3, axis="x")
    save_figure(figure, path)


README_BEGIN = "<!-- results: generated from results/*.json by `python -m experiments.table --readme README.md` -->"
README_END = "<!-- /results -->"
RESULTS_DOC = Path("docs") / "results.md"
"""The page that holds every generated results table; the README shows only the headline."""
RESULTS_BEGIN = (
    "<!-- all results: generated from results/*.json by `python -m experiments.table --readme README.md` -->"
)
RESULTS_END = "<!-- /all results -->"


def accuracy_table(results: Path) -> str:
    """The training results in `results` (one seed each) with flip TTA beside the plain PrivateTest accuracy."""
    lines = [
        "| result | PrivateTest acc | + flip TTA | + 10-view TTA | PublicTest acc | epochs | s/epoch | train min | "
        "machine |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for path in sorted(results.glob("*.json")):
        result = json.loads(path.read_text())
        if not (isinstance(result, dict) and "test_accuracy" in result and "command" in result):
            continue
        tta = result.get("test_accuracy_tta")
        tta_cell = "-" if tta is None else f"{tta:.4f} ({result.get('tta', '?')})"
        crops = result.get("test_accuracy_crops")
        lines.append(
            f"| `{path.name}` | {result['test_accuracy']:.4f} | {tta_cell} | "
            f"{'-' if crops is None else f'{crops:.4f}'} | "
            f"{result.get('val_accuracy', float('nan')):.4f} | {result.get('epochs', '-')} | "
            f"{result.get('seconds_per_epoch', float('nan')):.0f} | "
            f"{result.get('train_seconds', float('nan')) / 60:.0f} | {_cell(result.get('device', ''))} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def shipped_results(results: Path) -> list[tuple[dict[str, Any], dict[str, Any], str]]:
    """(shipped weights' record, the results JSON of the run they came from, its file name), one per shipped net."""
    from fer_jax.infer.predict import WEIGHTS_DIR

    by_run = {}
    for path in sorted(results.glob("*.json")):
        result = json.loads(path.read_text())
        if isinstance(result, dict) and "test_accuracy" in result and result.get("run_dir"):
            by_run[result["run_dir"]] = (result, path.name)
    shipped = []
    for record_path in sorted(WEIGHTS_DIR.glob("*.json")):
        record = json.loads(record_path.read_text())
        if record.get("source_run") in by_run:
            shipped.append((record, *by_run[record["source_run"]]))
    return shipped


SPEED_RESULTS = ("bench_cpu.json", "bench_cpu_bf16.json")
"""The README's speed rows: the bench on an AVX2-only CPU, and on one with AVX-512 and bfloat16 units."""


def headline_rows(results: Path) -> list[str]:
    """The README's one table: the shipped nets, JAX against PyTorch, and faces in the wild."""
    from fer_jax.infer.detect import DEFAULT_DETECTOR
    from fer_jax.infer.predict import DEFAULT_WEIGHTS

    def load(name: str) -> dict[str, Any] | None:
        path = results / name
        return json.loads(path.read_text()) if path.is_file() else None

    rows = []
    for record, result, name in shipped_results(results):
        role = (
            "`fer-jax predict`'s default" if record["file"] == DEFAULT_WEIGHTS.name else f"`--model {record['model']}`"
        )
        tta = result.get("test_accuracy_tta")
        rows.append(
            f"| {record['model']} x{record['width']:g} ({role}) | PrivateTest **{result['test_accuracy']:.4f}** | "
            + (f"flip TTA {tta:.4f}; " if tta is not None else "")
            + f"PublicTest {result['val_accuracy']:.4f}; {result['epochs']} epochs in "
            f"{result['train_seconds'] / 60:.0f} min on {_cell(result['device'])} | `results/{name}` |"
        )
    frameworks = load("compare_cpu.json")
    if frameworks:
        jax_acc, torch_acc = (frameworks["frameworks"][f]["summary"]["test_accuracy"] for f in ("jax", "pytorch"))
        rows.append(
            f"| JAX vs PyTorch, accuracy (same data, batches, recipe, seeds) | PrivateTest {jax_acc['mean']:.4f} vs "
            f"{torch_acc['mean']:.4f} (**{frameworks['ratios']['test_accuracy_ratio_jax_over_torch']:.2f}x**) | "
            f"mean of {jax_acc['n']} seeds, {frameworks['settings']['epochs']} epochs on "
            f"{frameworks['settings']['train_images']:,} Training faces | `results/compare_cpu.json` |"
        )
    for name in SPEED_RESULTS:
        speed = load(name) or {}
        features = ", ".join(speed.get("cpu_features") or [])
        for precision, measured in speed.get("by_precision", {}).items():
            jax_speed, torch_speed = (measured["summaries"][f]["train_step_images_per_s"] for f in ("jax", "pytorch"))
            ratio = measured["ratios"]["train_throughput_ratio_jax_over_torch"]
            rows.append(
                f"| JAX vs PyTorch, train speed ({precision}) | {jax_speed['median']:.0f} vs "
                f"{torch_speed['median']:.0f} images/s (**{ratio:.2f}x**)"
                f" | median of {jax_speed['n']} repeats in one run, {_cell(speed['machine'])}"
                + (f" with {features}" if features else "")
                + f" | `results/{name}` |"
            )
    faces = load("pipeline_cpu.json")
    default = next((r for r in (faces or {}).get("detectors", []) if r["detector"] == DEFAULT_DETECTOR), None)
    if default:
        rows.append(
            f"| faces in the wild (default detector `{DEFAULT_DETECTOR}`) | "
            f"end-to-end **{default['end_to_end_accuracy']:.3f}**, "
            f"recall {default['recall']:.3f} | accuracy on the faces found {default['accuracy_on_detected']:.3f}; "
            f"{default['detect_ms_per_image']:.0f} ms per image"
            + (f" at load average {load[0]:.1f}" if (load := faces.get("load_average")) else "")
            + " | `results/pipeline_cpu.json` |"
        )
    return ["| result | number | beside it | from |", "| --- | --- | --- | --- |", *rows]


def readme_block(results: Path) -> str:
    """The README's generated headline table; everything else is on docs/results.md."""
    return "\n\n".join(
        [
            README_BEGIN,
            "\n".join(headline_rows(results)),
            f"Every table, with its command: [{RESULTS_DOC.as_posix()}]({RESULTS_DOC.as_posix()}).",
            README_END,
        ]
    )


def results_page_block(results: Path) -> str:
    """docs/results.md's generated block: one section per committed results JSON that exists."""
    from experiments import ablation, bench
    from fer_jax import compare
    from fer_jax.data import check as datacheck

    def load(name: str) -> dict[str, Any] | None:
        path = results / name
        return json.loads(path.read_text()) if path.is_file() else None

    sections = []
    accuracy = accuracy_table(results)
    sections.append(
        "**Accuracy** (PrivateTest of the PublicTest-selected checkpoint, one seed each):\n\n"
        + (accuracy or "_None measured on the corrected archive yet (see the status above)._")
    )
    if (results / "seed_cnn_search.json").is_file():
        sections.append(
            "**Seed CNN recipe search**: 5-epoch runs of learning rates, schedules, optimizers, batch size and "
            f"interpolation, in [{SEARCH_DOC.as_posix()}]({SEARCH_DOC.as_posix()}#the-seed-cnns-recipe-search)."
        )
    speedrun = load("time_to_accuracy.json")
    if speedrun:
        sections.append(
            "**Time to accuracy** (`results/time_to_accuracy.json`: PublicTest accuracy against wall-clock minutes, "
            f"same machine):\n\n```\n{speedrun['command']}\n```\n\n"
            + "\n".join(
                f"- {label}: best PublicTest {max(c['val_accuracy']):.4f} after "
                f"{c['minutes'][c['val_accuracy'].index(max(c['val_accuracy']))]:.1f} min"
                for label, c in speedrun["curves"].items()
            )
            + "\n\n![time to accuracy](results/time_to_accuracy.png)"
        )
    if (results / "throughput_cpu.json").is_file():
        sections.append(
            "**Candidate nets for the CPU**: train images/s of each zoo net and width, in "
            f"[{THROUGHPUT_DOC.as_posix()}]({THROUGHPUT_DOC.as_posix()}#models)."
        )
    cpu_best = load("cpu_best_ablation.json")
    if cpu_best:
        sections.append(
            f"**CPU-best recipe ablation** (`results/cpu_best_ablation.json`; each variant from scratch on all "
            f"Training faces, PublicTest only; {cpu_best['machine']}):\n\n"
            f"```\n{ablation.whole_command(cpu_best['command'])}\n```\n\n" + ablation.format_table(cpu_best["variants"])
        )
    check = load("data_check.json")
    if check:
        sections.append(
            "**The data** (`results/data_check.json`, `fer-jax data check`; sharpness = median "
            "mean-absolute Laplacian; near copies include exact ones):\n\n" + datacheck.format_report(check)
        )
    speed = load("bench_cpu.json")
    if speed:
        sections.append(
            f"**Speed, JAX vs PyTorch on this CPU** (`results/bench_cpu.json`, median [min, max] of "
            f"{speed['settings']['repeats']} repeats, commit {str(speed.get('git_commit'))[:7]}):\n\n"
            f"```\n{speed['command']}\n{bench.format_table(speed)}\n```"
        )
    faces = load("pipeline_cpu.json")
    if faces:
        sections.append(
            "**Faces in the wild** (`results/pipeline_cpu.json`, `python -m experiments.pipeline`: detection + "
            "classification; end-to-end accuracy counts a missed face as wrong; more in "
            "[docs/predict.md](docs/predict.md)):\n\n" + pipeline_section(faces)
        )
    frameworks = load("compare_cpu.json")
    if frameworks:
        sections.append(
            "**JAX vs PyTorch, same data, recipe and seeds** (`results/compare_cpu.json`"
            + (f"; {note}" if (note := frameworks["notes"].get("beside_the_run")) else "")
            + "):\n\n"
            f"```\n{frameworks['command']}\n{compare.format_table(frameworks)}\n```"
        )
    # The page lives in docs/: its links are relative to it.
    body = "\n\n".join(sections).replace("](docs/", "](").replace("](results/", "](../results/")
    return "\n\n".join([RESULTS_BEGIN, body, RESULTS_END])


PIPELINE_DOC = Path("docs") / "predict.md"
"""The page (beside the README) whose detector tables are generated from results/pipeline_cpu.json."""
PIPELINE_BEGIN = (
    "<!-- pipeline: generated from results/pipeline_cpu.json by `python -m experiments.table --readme README.md` -->"
)
PIPELINE_END = "<!-- /pipeline -->"


def pipeline_section(report: dict[str, Any]) -> str:
    """The end-to-end benchmark in brief: the weights it scored, the classifier's speed, the detector table."""
    from experiments import pipeline

    weights, speed, alone = report["weights"], report["classifier_speed"], report["classifier_alone"]
    onnx, int8 = speed.get("onnx"), speed.get("onnx_int8")
    return (
        f"Scenes from {report['split']} faces ({report['labelled_faces']} labelled FER faces, "
        f"{report['scenes']['free']} face-free images), {report['machine']}, load average "
        f"{report['load_average'][0]:.1f} as the last run began; classifier: the shipped "
        f"`{weights['file']}` ({weights['model']}, PrivateTest {weights['test_accuracy']:.3f} on the original "
        f"crops{'' if weights.get('views', 1) == 1 else ', read with ' + weights['tta'] + ' TTA'}). "
        f"Classifier alone, batch {speed['batch']}: {speed['jax']['faces_per_s']:,.0f} faces/s in JAX"
        + (f", {onnx['faces_per_s']:,.0f} with ONNX Runtime" if onnx else "")
        + (
            f", {int8['faces_per_s']:,.0f} with ONNX Runtime in int8 (`export-onnx --int8`, PrivateTest "
            f"{alone['onnx_int8_accuracy_on_original_crops']:.3f} on the crops)"
            if int8
            else ""
        )
        + ".\n\n"
        + pipeline.format_table(report)
    )


def generated_block(begin: str, end: str, path: Path, body: Callable[[dict[str, Any]], list[str]]) -> str:
    """A docs page's generated block: `begin`, the paragraphs `body` makes of the JSON at `path`, `end`."""
    if not path.is_file():
        return "\n\n".join([begin, "_Not measured yet._", end])
    return "\n\n".join([begin, *body(json.loads(path.read_text())), end])


def pipeline_block(results: Path) -> str:
    """docs/predict.md's generated block: the detector table, recall by scene/size/rotation, upright crops."""
    from experiments import pipeline

    def body(report: dict[str, Any]) -> list[str]:
        commands = "\n".join(report.get("commands") or [report["command"]])
        return [
            f"```\n{commands}\n```",
            pipeline_section(report),
            "Recall by kind of scene, face size and rotation (*turned 15-45* pools the +-15, 30 and 45 degree "
            "faces, *turned 90* the +-90 ones):",
            pipeline.format_recall_table(report),
            "Accuracy on the rotated FER faces each detector found (and on all it found), crop turned upright vs "
            "as found:",
            pipeline.format_alignment(report),
        ]

    return generated_block(PIPELINE_BEGIN, PIPELINE_END, results / "pipeline_cpu.json", body)


def rewrite_block(path: Path, begin: str, end: str, block: str) -> bool:
    """Replace the block from `begin` to `end` in `path` with `block`; True if it changed."""
    text = path.read_text()
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"{path}: no generated block (a line {begin!r} ... {end!r})")
    updated = text[:start] + block + text[stop + len(end) :]
    if updated != text:
        path.write_text(updated)
    return updated != text


THROUGHPUT_DOC = Path("docs") / "training.md"
"""The page whose candidate-net speed table is generated from results/throughput_cpu.json."""
THROUGHPUT_BEGIN = (
    "<!-- throughput: generated from results/throughput_cpu.json by "
    "`python -m experiments.table --readme README.md` -->"
)
THROUGHPUT_END = "<!-- /throughput -->"


def throughput_block(results: Path) -> str:
    """docs/training.md's generated block: train images/s of the candidate nets on this CPU."""
    from experiments import throughput

    def body(report: dict[str, Any]) -> list[str]:
        return [
            f"Train images/s with the on-device pipeline, median [min, max] over workers and blocks "
            f"({report['machine']}):",
            f"```\n{report['command']}\n```",
            throughput.format_table(report).split("\n", 1)[1],
        ]

    return generated_block(THROUGHPUT_BEGIN, THROUGHPUT_END, results / "throughput_cpu.json", body)


SEARCH_DOC = Path("docs") / "training.md"
"""The page whose seed-CNN recipe-search table is generated from results/seed_cnn_search.json."""
SEARCH_BEGIN = (
    "<!-- search: generated from results/seed_cnn_search.json by `python -m experiments.table --readme README.md` -->"
)
SEARCH_END = "<!-- /search -->"


def search_block(results: Path) -> str:
    """docs/training.md's generated block: the seed CNN's 5-epoch recipe search, with its command."""
    from experiments import ablation

    def body(search: dict[str, Any]) -> list[str]:
        return [
            f"5 epochs each on all Training faces, PublicTest only, one seed; {search['machine']}:",
            f"```\n{ablation.whole_command(search['command'])}\n```",
            ablation.format_table(search["variants"]),
            "(s: wall seconds per variant, with other work on the machine: not a speed measurement.)",
        ]

    return generated_block(SEARCH_BEGIN, SEARCH_END, results / "seed_cnn_search.json", body)


COLD_START_BEGIN = (
    "<!-- cold start: generated from results/cold_start_cpu.json by "
    "`python -m experiments.table --readme README.md` -->"
)
COLD_START_END = "<!-- /cold start -->"


def cold_start_block(results: Path) -> str:
    """docs/predict.md's generated block: fresh-process seconds of `fer-jax predict` on one photo, its imports, and
    whether the checkouts agree face for face."""
    from experiments import cold_start

    def body(report: dict[str, Any]) -> list[str]:
        checkouts = report["checkouts"]
        packages = sorted({p for row in checkouts.values() for p in list(row["import_seconds"])[:8]})
        imports = [
            "| package | "
            + " | ".join(f"{name} ({(row['git_commit'] or '?')[:7]})" for name, row in checkouts.items())
            + " |",
            "| --- |" + " ---: |" * len(checkouts),
            *(
                f"| {package} | "
                + " | ".join(f"{row['import_seconds'].get(package, 0.0):.2f}" for row in checkouts.values())
                + " |"
                for package in sorted(
                    packages, key=lambda p: -max(r["import_seconds"].get(p, 0) for r in checkouts.values())
                )
            ),
        ]
        same = report.get("same_predictions")
        agreement = (
            f"On the folder of {same['images']} scenes the checkouts found the same boxes in "
            f"{same['images_with_the_same_boxes']} images and the same emotion for "
            f"{same['faces_with_the_same_emotion']} of {same['faces']} faces; probabilities differ by "
            f"{same['largest_probability_difference']:.4f} at most."
            if same
            else ""
        )
        peer = report["fer_peer"]
        peer_line = (
            f"The `fer` package {peer['version']}: {peer['seconds']['median']:.2f} s."
            if peer.get("installed")
            else "The `fer` package is not installed here, so it was not timed."
        )
        return [
            f"{report['machine']} ({', '.join(report['cpu_features'])}), load average "
            f"{report['load_average'][0]:.1f} at the start; median [min, max] seconds of fresh processes:",
            f"```\n{report['command']}\n```",
            cold_start.format_table(report),
            "Seconds the predict process spends importing each top-level package (its modules' own times in `python -X "
            "importtime`, wherever they were imported from; the largest eight of each checkout):",
            "\n".join(imports),
            " ".join(part for part in (agreement, peer_line) if part),
            *flip_default_paragraphs(results / COLD_START_FLIP),
        ]

    return generated_block(COLD_START_BEGIN, COLD_START_END, results / "cold_start_cpu.json", body)


COLD_START_FLIP = "cold_start_flip_cpu.json"
"""The same benchmark for predict's flip-TTA default against the last one-view commit."""


def flip_default_paragraphs(path: Path) -> list[str]:
    """What reading each face with its mirror (predict's default since issue 50) costs a cold start, if measured."""
    from experiments import cold_start

    if not path.is_file():
        return []
    report = json.loads(path.read_text())
    same = report["same_predictions"]
    return [
        "Since then `predict` reads each face and its mirror by default (`--tta flip`); the same benchmark, "
        f"`{report['command']}`, against the last one-view commit (load average {report['load_average'][0]:.1f}):",
        cold_start.format_table(report),
        f"The flip changes the emotion of {same['faces'] - same['faces_with_the_same_emotion']} of the "
        f"{same['faces']} faces on the folder of scenes (boxes: {same['images_with_the_same_boxes']} of "
        f"{same['images']} images the same).",
    ]


DEMO_DOC = Path("docs") / "demo.md"
"""The page whose latency, load and webcam table is generated from results/demo_*_cpu.json."""
DEMO_BEGIN = "<!-- demo: generated from results/demo_*_cpu.json by `python -m experiments.table --readme README.md` -->"
DEMO_END = "<!-- /demo -->"
DEMO_RESULTS = ("demo_latency_cpu.json", "demo_load_cpu.json", "demo_webcam_cpu.json")


def demo_block(results: Path) -> str:
    """docs/demo.md's generated block: one row per load run (clients, requests, errors, lost, latency, memory) and
    the webcam's frames/s, each with its machine and command."""
    found = {name: json.loads((results / name).read_text()) for name in DEMO_RESULTS if (results / name).is_file()}
    if not found:
        return "\n\n".join([DEMO_BEGIN, "_Not measured yet._", DEMO_END])
    rows = [
        "| run | clients | requests | errors | lost | p50 (s) | p95 (s) | server memory (MB): start -> 10 s -> end "
        "| file |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, run in found.items():
        if "clients" not in run:
            continue
        memory = run["server_rss_mb"]
        series = memory.get("each_second", [])
        after_10_s = f"{series[10]:,.0f} -> " if len(series) > 10 else ""
        rows.append(
            f"| {run['duration_s']:g} s | {run['clients']} | {run['requests']} | {run['errors']} | {run['lost']} | "
            f"{run['latency_s']['p50']:.3f} | {run['latency_s']['p95']:.3f} | {memory['start']:,.0f} -> {after_10_s}"
            f"{memory['end']:,.0f} ({run['server_rss_growth']:+.1%}) | `results/{name}` |"
        )
    paragraphs = [DEMO_BEGIN, "\n".join(rows)]
    webcam = found.get("demo_webcam_cpu.json")
    if webcam:
        paragraphs.append(
            f"Webcam ({webcam['frame_size'][0]}x{webcam['frame_size'][1]}, {webcam['duration_s']} s, "
            f"`results/demo_webcam_cpu.json`): {webcam['frames_per_s']['median']:.1f} frames/s median (min "
            f"{webcam['frames_per_s']['min']:.1f}), {webcam['faces_per_s']['median']:.1f} faces/s, "
            f"{webcam['server_ms_per_frame_median']:.0f} ms of server time per frame."
        )
    machines = sorted({f"{run['machine']['cpu']} ({run['machine']['cores']} cores)" for run in found.values()})
    commands = "\n".join(run["command"] for run in found.values())
    paragraphs += [f"Machine: {', '.join(machines)}; commands:", f"```\n{commands}\n```", DEMO_END]
    return "\n\n".join(paragraphs)


TRAINING_CORE_DOC = Path("docs") / "training.md"
TRAINING_CORE_BEGIN = (
    "<!-- training core: generated from results/training_core_cpu.json by "
    "`python -m experiments.table --readme README.md` -->"
)
TRAINING_CORE_END = "<!-- /training core -->"


def training_core_block(results: Path) -> str:
    """docs/training.md's generated block: the training core before and after issue 49, measured in one run."""
    from experiments import training_core

    def body(report: dict[str, Any]) -> list[str]:
        return [
            f"{report['machine']} ({', '.join(report['cpu_features'])}); median [min, max] of "
            f"{report['settings']['repeats']} fresh processes per checkout, interleaved:",
            f"```\n{report['command']}\n```",
            training_core.format_table(report).split("\n", 2)[2],  # the table, without its machine line
        ]

    return generated_block(TRAINING_CORE_BEGIN, TRAINING_CORE_END, results / "training_core_cpu.json", body)


DOC_BLOCKS = (
    (RESULTS_DOC, RESULTS_BEGIN, RESULTS_END, results_page_block),
    (PIPELINE_DOC, PIPELINE_BEGIN, PIPELINE_END, pipeline_block),
    (PIPELINE_DOC, COLD_START_BEGIN, COLD_START_END, cold_start_block),
    (DEMO_DOC, DEMO_BEGIN, DEMO_END, demo_block),
    (THROUGHPUT_DOC, THROUGHPUT_BEGIN, THROUGHPUT_END, throughput_block),
    (SEARCH_DOC, SEARCH_BEGIN, SEARCH_END, search_block),
    (TRAINING_CORE_DOC, TRAINING_CORE_BEGIN, TRAINING_CORE_END, training_core_block),
)
"""The docs pages' generated blocks: (page, first line, last line, the function that builds the block)."""


def rewrite_readme(readme: Path, results: Path) -> bool:
    """Rewrite the README's results block and the docs pages' generated blocks; True if any changed."""
    changed = rewrite_block(readme, README_BEGIN, README_END, readme_block(results))
    for doc, begin, end, build in DOC_BLOCKS:
        if (readme.parent / doc).is_file():
            changed = rewrite_block(readme.parent / doc, begin, end, build(results)) or changed
    return changed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.table",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--runs",
        type=Path,
        default=Path("runs"),
        help="where to look for summary.json (recursively; default: %(default)s)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="folder of training-result JSON files (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results/table.md"),
        help="the Markdown table (default: %(default)s); the PNG goes beside it",
    )
    parser.add_argument(
        "--readme",
        type=Path,
        metavar="README",
        help="instead, rewrite README's generated results block (and the docs pages' generated blocks) from --results",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fer_jax.files import write_atomic

    if args.readme:
        try:
            changed = rewrite_readme(args.readme, args.results)
        except (OSError, ValueError) as err:
            print(f"experiments.table: error: {err}", file=sys.stderr)
            return 2
        pages = ", ".join(dict.fromkeys(str(doc) for doc, *_ in DOC_BLOCKS))
        print(f"{args.readme}, {pages}: generated blocks {'rewritten' if changed else 'already current'}")
        return 0

    try:
        rows = collect(args.runs, args.results)
    except (OSError, ValueError) as err:
        print(f"experiments.table: error: {err}", file=sys.stderr)
        return 2
    if not rows:
        print(
            f"experiments.table: error: no summary.json under {args.runs} and no training result in {args.results}",
            file=sys.stderr,
        )
        return 1
    table = format_markdown(rows)
    write_atomic(args.out, lambda handle: handle.write(table))
    plot_rows(rows, args.out.with_suffix(".png"))
    print(table, end="")
    print(f"Wrote {args.out} and {args.out.with_suffix('.png')} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
