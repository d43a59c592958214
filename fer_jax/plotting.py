"""Matplotlib figures of a run (Agg backend, written atomically): curves and confusion matrices."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.figure import Figure  # noqa: E402

from fer_jax.data import EMOTIONS  # noqa: E402
from fer_jax.files import write_atomic  # noqa: E402


def curves_figure(history: Sequence[dict[str, Any]]) -> Figure:
    """Loss and accuracy per epoch, train beside PublicTest."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.plot(epochs, [row[f"train_{metric}"] for row in history], "o-", label="train (augmented)")
        ax.plot(epochs, [row[f"val_{metric}"] for row in history], "o-", label="PublicTest")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    return figure


def confusion_matrix_figure(matrix: Sequence[Sequence[int]], title: str = "") -> Figure:
    """Row-normalised confusion matrix (colour and percent) with the counts beside."""
    figure, ax = plt.subplots(figsize=(7, 6), constrained_layout=True)
    totals = [max(1, sum(row)) for row in matrix]
    normalised = [[value / total for value in row] for row, total in zip(matrix, totals)]
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            share = normalised[i][j]
            ax.text(j, i, f"{share:.0%}\n{count}", ha="center", va="center", fontsize=8,
                    color="white" if share > 0.5 else "black")
    ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    figure.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    return figure


def save_figure(figure: Figure, path: str | os.PathLike) -> None:
    write_atomic(path, lambda handle: figure.savefig(handle, format=Path(path).suffix[1:], dpi=110), mode="wb")
    plt.close(figure)


def plot_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    save_figure(curves_figure(history), path)


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], path: str | os.PathLike, title: str = "") -> None:
    save_figure(confusion_matrix_figure(matrix, title), path)
