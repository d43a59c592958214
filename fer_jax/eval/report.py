"""Evaluation report of a run's best checkpoint: metrics per class, confusion matrices, worst mistakes, TTA.

`evaluate_report(run_dir)` (CLI: `fer-jax evaluate RUN_DIR`) writes into
`RUN_DIR/eval/`: `report.json`, and per split (PrivateTest, the reported
number, and PublicTest, the one the checkpoint was selected on)
`confusion_<split>.png` and `mistakes_<split>.png`. Everything is computed
with jax.numpy from the logits of the training code's own eval step, so the
plain PrivateTest accuracy is the one `results.json` reports.

Test-time augmentation (TTA) averages the softmax probabilities of several
views of each face: 'flip' the face and its mirror image; 'crops' (optional,
5x the cost) adds the four 44x44 corner crops scaled back to 48x48 (a zoom of
1.09, inside the training augmentation's range), each also mirrored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from fer_jax.data.fer2013 import EMOTIONS, Split
from fer_jax.data.views import CROP_SIZE, View
from fer_jax.environment import device_description
from fer_jax.files import write_json
from fer_jax.train import plotting
from fer_jax.train.eval_step import EvalStep, Weights, build_eval_step
from fer_jax.train.evaluation import (
    averaged_probabilities,
    confusion_matrix,
    load_splits,
    split_logits,
    tta_views,
)
from fer_jax.train.restore import restore_weights

REPORT_SPLITS = ("PrivateTest", "PublicTest")
MISTAKES_SHOWN = 24


def classification_metrics(
    labels: jax.Array | Sequence[int], predictions: jax.Array | Sequence[int], num_classes: int = len(EMOTIONS)
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro-F1 and the confusion matrix.

    A class never predicted has precision 0, a class absent from `labels` recall 0,
    and F1 is 0 where precision + recall is 0 (scikit-learn's `zero_division=0`).
    Macro-F1 is the plain mean over all `num_classes` classes.
    """
    matrix = confusion_matrix(jnp.asarray(labels), jnp.asarray(predictions), num_classes)
    hits = jnp.diag(matrix)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = jnp.where(predicted > 0, hits / jnp.maximum(predicted, 1), 0.0)
    recall = jnp.where(support > 0, hits / jnp.maximum(support, 1), 0.0)
    f1 = jnp.where(precision + recall > 0, 2 * precision * recall / jnp.maximum(precision + recall, 1e-12), 0.0)
    names = EMOTIONS if num_classes == len(EMOTIONS) else [str(i) for i in range(num_classes)]
    return {
        "accuracy": int(hits.sum()) / max(1, int(matrix.sum())),  # exact, as results.json's
        "macro_f1": float(f1.mean()),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, support)
        },
        "confusion_matrix": matrix.tolist(),
    }


def split_report(
    weights: Weights, eval_step: EvalStep, split: Split, batch_size: int, views: dict[str, list[View]]
) -> tuple[dict[str, Any], jax.Array]:
    """Metrics of one split, plain and per TTA variant of `views`; also returns the plain probabilities (N, 7)."""
    labels = split.labels.tolist()
    logits = {None: split_logits(weights, eval_step, split, batch_size)}
    probabilities = jax.nn.softmax(logits[None])
    report = classification_metrics(labels, jnp.argmax(probabilities, -1))
    report["images"] = len(split)
    report["loss"] = float(
        -jnp.take_along_axis(jax.nn.log_softmax(logits[None]), jnp.asarray(labels)[:, None], 1).mean()
    )
    report["tta"] = {}
    for name, variant in views.items():
        for view in variant:
            if view not in logits:
                logits[view] = split_logits(weights, eval_step, split, batch_size, view)
        averaged = averaged_probabilities([logits[view] for view in variant])
        metrics = classification_metrics(labels, jnp.argmax(averaged, -1))
        report["tta"][name] = {"views": len(variant), "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}
    return report, probabilities


def confident_mistakes(
    labels: Sequence[int], probabilities: jax.Array, count: int = MISTAKES_SHOWN
) -> list[dict[str, Any]]:
    """The `count` wrong predictions with the highest probability, most confident first."""
    predictions = jnp.argmax(probabilities, -1)
    confidence = jnp.where(predictions != jnp.asarray(labels), probabilities.max(-1), -1.0)
    order = jnp.argsort(-confidence)[:count]
    return [
        {
            "index": int(i),
            "true": EMOTIONS[labels[int(i)]],
            "predicted": EMOTIONS[int(predictions[i])],
            "probability": float(confidence[i]),
        }
        for i in order
        if confidence[i] >= 0
    ]


def evaluate_report(run_dir: str | Path, data_source: str | None = None, crops: bool = False) -> dict[str, Any]:
    """Evaluate RUN_DIR's best checkpoint on PrivateTest and PublicTest; write RUN_DIR/eval/ and return the report."""
    run_dir = Path(run_dir)
    config, weights, record = restore_weights(run_dir)
    eval_step = build_eval_step(config.model, config.train.devices)
    if data_source:
        config.data.source = data_source
    splits = load_splits(config)
    out = run_dir / "eval"
    views = tta_views(crops)
    report: dict[str, Any] = {
        "run_dir": str(run_dir),
        "model": config.model.name,
        "best_epoch": record["best_epoch"],
        "data": config.data.resolved_source(),
        "device": device_description(),
        "tta": "probabilities averaged over views: flip = face + mirror image; crops = those + the four "
        f"{CROP_SIZE}x{CROP_SIZE} corner crops scaled to 48x48, each mirrored too",
        "splits": {},
    }
    for name in REPORT_SPLITS:
        split = splits[name]
        print(f"Evaluating {name} ({len(split)} faces)...")
        metrics, probabilities = split_report(weights, eval_step, split, config.train.eval_batch_size, views)
        mistakes = confident_mistakes(split.labels.tolist(), probabilities)
        metrics["most_confident_mistakes"] = mistakes
        report["splits"][name] = metrics
        title = f"{name}, best checkpoint (epoch {record['best_epoch']})"
        plotting.plot_confusion_matrices(metrics["confusion_matrix"], out / f"confusion_{name}.png", title)
        plotting.plot_mistakes(
            [split.images[m["index"]].tolist() for m in mistakes],
            [f"true {m['true']}\npred {m['predicted']} {m['probability']:.2f}" for m in mistakes],
            out / f"mistakes_{name}.png",
            f"{name}: most confident mistakes",
        )
    write_json(out / "report.json", report)
    print(format_report(report))
    print(f"Report written to {out}/")
    return report


def format_report(report: dict[str, Any]) -> str:
    """A short text table: per split the plain and TTA numbers, then per-class F1."""
    lines = []
    for name, split in report["splits"].items():
        tta = "  ".join(
            f"TTA {k} ({v['views']} views) acc {v['accuracy']:.4f} F1 {v['macro_f1']:.4f}"
            for k, v in split["tta"].items()
        )
        lines.append(f"{name:<12} accuracy {split['accuracy']:.4f}  macro-F1 {split['macro_f1']:.4f}  |  {tta}")
        lines.append("    " + "  ".join(f"{emotion} F1 {m['f1']:.2f}" for emotion, m in split["per_class"].items()))
    return "\n".join(lines)
