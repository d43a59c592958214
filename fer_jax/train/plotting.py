"""Matplotlib figures of a run (Agg backend, written atomically): curves, confusion matrices, image grids."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.figure import Figure  # noqa: E402

from fer_jax.data.fer2013 import EMOTIONS  # noqa: E402
from fer_jax.files import write_atomic  # noqa: E402


def curves_figure(history: Sequence[dict[str, Any]]) -> Figure:
    """Loss and accuracy per epoch, train beside PublicTest."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    # Fixed margins, not constrained layout: a run redraws this every epoch, and the layout took half of the
    # figure's 0.35 s. The content is fixed, so the margins fit it. Likewise the confusion matrix below.
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.96, wspace=0.22)
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
    figure, ax = plt.subplots(figsize=(7, 6))
    figure.subplots_adjust(left=0.13, right=0.88, bottom=0.15, top=0.94)
    totals = [max(1, sum(row)) for row in matrix]
    normalised = [[value / total for value in row] for row, total in zip(matrix, totals)]
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            share = normalised[i][j]
            ax.text(
                j,
                i,
                f"{share:.0%}\n{count}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share > 0.5 else "black",
            )
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


def confusion_matrices_figure(matrix: Sequence[Sequence[int]], title: str = "") -> Figure:
    """Two panels: the counts, and the matrix normalised per true class (rows sum to 1)."""
    totals = [max(1, sum(row)) for row in matrix]
    normalised = [[value / total for value in row] for row, total in zip(matrix, totals)]
    figure, axes = plt.subplots(1, 2, figsize=(13, 5.5), constrained_layout=True)
    peak = max(1, max(max(row) for row in matrix))
    panels = (
        (axes[0], matrix, "counts", "count", "{:d}", peak),
        (axes[1], normalised, "row-normalised", "share of true class", "{:.0%}", 1.0),
    )
    for ax, values, panel_title, label, fmt, vmax in panels:
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                ax.text(
                    j,
                    i,
                    fmt.format(value),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if value > vmax / 2 else "black",
                )
        ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
        ax.set_yticks(range(len(EMOTIONS)), EMOTIONS)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(panel_title)
        figure.colorbar(image, ax=ax, fraction=0.046, label=label)
    figure.suptitle(title)
    return figure


def image_grid_figure(images: Sequence[Any], captions: Sequence[str], title: str = "", columns: int = 6) -> Figure:
    """8-bit grayscale images ((H, W) arrays or nested lists) in a grid, each with its caption."""
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.9 * columns, 2.3 * rows), squeeze=False, constrained_layout=True
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(caption, fontsize=8)
    if not images:
        axes.flat[0].text(0.5, 0.5, "none", ha="center", va="center")
    figure.suptitle(title)
    return figure


def plot_confusion_matrices(matrix: Sequence[Sequence[int]], path: str | os.PathLike, title: str = "") -> None:
    save_figure(confusion_matrices_figure(matrix, title), path)


def plot_mistakes(images: Sequence[Any], captions: Sequence[str], path: str | os.PathLike, title: str = "") -> None:
    save_figure(image_grid_figure(images, captions, title), path)


def time_to_accuracy_figure(curves: dict[str, dict[str, Sequence[float]]]) -> Figure:
    """PublicTest accuracy after each epoch against cumulative wall-clock minutes, one line per run.

    `curves`: run label -> {'minutes': [...], 'val_accuracy': [...]}, as `experiments.time_to_accuracy` builds it.
    """
    figure, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for label, curve in curves.items():
        ax.plot(curve["minutes"], curve["val_accuracy"], "o-", markersize=3, label=label)
    ax.set_xlabel("wall-clock minutes (training + PublicTest evaluation)")
    ax.set_ylabel("PublicTest accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    return figure
