"""A health check of FER-2013 as loaded: would it have caught the blurred Training split?

`check_dataset` reports, per split: counts and class histogram, pixel intensity
mean and std, a sharpness statistic (the median over images of the mean absolute
4-neighbour Laplacian), near-constant (blank) images, and exact duplicate images
within the split; across splits, exact duplicates between each pair (Training ->
test leakage: FER-2013 has some). It warns when one split's sharpness or
intensity statistics are far from the others' (the blurred copy of 2026: Training
1.9 against 28.6 for the test splits).

`check_source` caches the report in the archive's content folder (`fer_jax.data.cache`),
so training runs it on every start for a fraction of a second after the first time.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from fer_jax.data.cache import content_folder, file_sha256
from fer_jax.data.fer2013 import EMOTIONS, FER2013, SPLITS, Split, load_fer2013
from fer_jax.files import FileFormatError, read_json, write_json

REPORT_FILE = "data_check.json"
REPORT_VERSION = 1
"""Bumped when the report's statistics change, so cached reports are recomputed."""
BLANK_STD = 2.0
"""An image whose pixel standard deviation is below this many gray levels counts as blank (near-constant)."""
SHARPNESS_RATIO = 0.5
"""Warn when a split's median sharpness is below this fraction (or above its inverse) of the other splits'."""
MEAN_GAP = 20.0
"""Warn when a split's mean intensity differs from the other splits' by more than this many gray levels."""
STD_RATIO = 0.75
"""Warn when a split's intensity std is below this fraction (or above its inverse) of the other splits'."""
NEAR_COPY_GRAY_LEVELS = 3.0
"""Two images whose mean absolute pixel difference is below this count as near copies (the same face re-encoded)."""
EXAMPLES = 5
"""File names listed per finding (blank images, duplicate pairs)."""
SAMPLES_PER_CLASS = 8


def sharpness(images: torch.Tensor) -> torch.Tensor:
    """Per-image mean absolute 4-neighbour Laplacian of (N, H, W) uint8 images (interior pixels), in gray levels."""
    x = images.float()
    laplacian = 4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]
    return laplacian.abs().mean(dim=(1, 2))


def split_statistics(split: Split) -> dict[str, Any]:
    """Counts, histogram, intensity, sharpness, blank images and within-split duplicates of one split."""
    pixels = split.images.float()
    per_image_std = pixels.flatten(1).std(dim=1)
    blank = torch.nonzero(per_image_std < BLANK_STD).flatten().tolist()
    groups, _ = duplicate_groups(split.images)
    conflicting = [g for g in groups if len(set(split.labels[g].tolist())) > 1]
    return {
        "count": len(split),
        "class_counts": dict(zip(EMOTIONS, split.class_counts())),
        "intensity_mean": pixels.mean().item(),
        "intensity_std": pixels.std().item(),
        "sharpness_median": sharpness(split.images).median().item(),
        "blank_images": len(blank),
        "blank_examples": [_name(split, i) for i in blank[:EXAMPLES]],
        "duplicate_images": sum(len(g) - 1 for g in groups),
        "duplicate_groups": len(groups),
        "duplicate_groups_with_conflicting_labels": len(conflicting),
        "duplicate_examples": [[_name(split, i) for i in g] for g in groups[:EXAMPLES]],
    }


def duplicate_groups(images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Indices of each group of two or more identical images, and every image's group id (torch.unique's inverse)."""
    _, inverse, counts = torch.unique(images.flatten(1), dim=0, return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)
    groups = [g for g in torch.split(order, counts.tolist()) if len(g) > 1]
    return groups, inverse


def cross_split_duplicates(dataset: FER2013) -> dict[str, Any]:
    """For each pair of splits (A, B): how many images of B are exact copies, and near copies, of an image in A.

    A near copy differs from its closest image of A by less than `NEAR_COPY_GRAY_LEVELS` on average: re-encoded
    or slightly processed copies (an archive rebuilt from another copy no longer matches byte for byte).
    """
    images = torch.cat([dataset[name].images for name in SPLITS])
    owner = torch.cat([torch.full((len(dataset[name]),), k) for k, name in enumerate(SPLITS)])
    _, inverse = duplicate_groups(images)
    report = {}
    for a in range(len(SPLITS)):
        for b in range(a + 1, len(SPLITS)):
            in_a = torch.zeros(int(inverse.max()) + 1, dtype=torch.bool)
            in_a[inverse[owner == a]] = True
            exact = torch.nonzero(in_a[inverse[owner == b]]).flatten()
            split_a, split_b = dataset[SPLITS[a]], dataset[SPLITS[b]]
            near, partner = near_copies(split_a.images, split_b.images)
            report[f"{SPLITS[a]}->{SPLITS[b]}"] = {
                "exact": len(exact),
                "exact_examples": [_name(split_b, int(i)) for i in exact[:EXAMPLES]],
                "near": len(near),
                "near_with_other_label": int((split_b.labels[near] != split_a.labels[partner]).sum()),
                "near_examples": [
                    [_name(split_b, int(i)), _name(split_a, int(j))]
                    for i, j in zip(near[:EXAMPLES], partner[:EXAMPLES])
                ],
            }
    return report


def near_copies(reference: torch.Tensor, queries: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the `queries` whose closest `reference` image (found on 12x12 means, checked at full size) differs
    by less than `NEAR_COPY_GRAY_LEVELS` per pixel on average, and the index of that closest image."""
    pooled_reference = _pooled(reference)
    found, partners = [], []
    for start in range(0, len(queries), chunk):
        batch = queries[start : start + chunk]
        closest = torch.cdist(_pooled(batch), pooled_reference).argmin(dim=1)
        difference = (batch.float() - reference[closest].float()).abs().mean(dim=(1, 2))
        hits = torch.nonzero(difference < NEAR_COPY_GRAY_LEVELS).flatten()
        found.append(hits + start)
        partners.append(closest[hits])
    return torch.cat(found), torch.cat(partners)


def _pooled(images: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(images.float().unsqueeze(1), 4).flatten(1)


def find_outliers(splits: dict[str, dict[str, Any]]) -> list[str]:
    """Warnings for each split whose sharpness, mean or std is far from the median of the other splits."""
    warnings = []
    for name, stats in splits.items():
        others = [s for other, s in splits.items() if other != name]
        if not others:
            continue
        sharp = statistics.median(s["sharpness_median"] for s in others)
        mean = statistics.median(s["intensity_mean"] for s in others)
        std = statistics.median(s["intensity_std"] for s in others)
        ratio = stats["sharpness_median"] / sharp if sharp else 1.0
        if not SHARPNESS_RATIO <= ratio <= 1 / SHARPNESS_RATIO:
            warnings.append(
                f"{name}: median sharpness {stats['sharpness_median']:.1f} against {sharp:.1f} in the other "
                f"splits ({ratio:.2f}x): its images look {'blurred' if ratio < 1 else 'sharpened or noisy'}"
            )
        if abs(stats["intensity_mean"] - mean) > MEAN_GAP:
            warnings.append(
                f"{name}: mean intensity {stats['intensity_mean']:.1f} against {mean:.1f} in the other splits"
            )
        std_ratio = stats["intensity_std"] / std if std else 1.0
        if not STD_RATIO <= std_ratio <= 1 / STD_RATIO:
            warnings.append(
                f"{name}: intensity std {stats['intensity_std']:.1f} against {std:.1f} in the other splits "
                f"({std_ratio:.2f}x)"
            )
    return warnings


def check_dataset(dataset: FER2013) -> dict[str, Any]:
    """The data check report of a loaded dataset (see the module docstring); `warnings` lists what looks wrong."""
    splits = {name: split_statistics(dataset[name]) for name in SPLITS}
    return {
        "version": REPORT_VERSION,
        "source": dataset.source,
        "splits": splits,
        "cross_split_duplicates": cross_split_duplicates(dataset),
        "warnings": find_outliers(splits),
        "thresholds": {
            "blank_std": BLANK_STD,
            "sharpness_ratio": SHARPNESS_RATIO,
            "mean_gap": MEAN_GAP,
            "std_ratio": STD_RATIO,
        },
    }


def check_source(dataset: FER2013, cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """`check_dataset`, cached beside the decoded archive when the source is a file (keyed by its sha256)."""
    source = Path(dataset.archive or dataset.source)
    if not source.is_file():
        return check_dataset(dataset)
    cached = content_folder(source, cache_dir) / REPORT_FILE
    if cached.is_file():
        try:
            report = read_json(cached, "cached data check")
        except FileFormatError as err:
            print(f"warning: {err}; checking the data again", file=sys.stderr)
            report = {}
        if report.get("version") == REPORT_VERSION:
            return report
    report = {**check_dataset(dataset), "dataset_sha256": file_sha256(source)}
    write_json(cached, report)
    return report


def check_for_run(dataset: FER2013, run_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> None:
    """The check a training run makes of its data: `RUN_DIR/data_check.json`, and each warning on stderr."""
    report = check_source(dataset, cache_dir)
    write_json(Path(run_dir) / REPORT_FILE, report)
    for warning in report["warnings"]:
        print(f"WARNING: data check: {warning} (see {Path(run_dir) / REPORT_FILE})", file=sys.stderr)


def format_report(report: dict[str, Any]) -> str:
    """The per-split table (Markdown), the cross-split copies and the warnings, as text."""
    lines = [
        "| split | images | mean | std | sharpness | blank | duplicates (groups, conflicting labels) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in report["splits"].items():
        lines.append(
            f"| {name} | {s['count']:,} | {s['intensity_mean']:.1f} | {s['intensity_std']:.1f} | "
            f"{s['sharpness_median']:.1f} | {s['blank_images']} | {s['duplicate_images']} "
            f"({s['duplicate_groups']}, {s['duplicate_groups_with_conflicting_labels']}) |"
        )
    lines.append("")
    lines.append(
        "Copies across splits (exact / near): "
        + ", ".join(f"{pair} {d['exact']} / {d['near']}" for pair, d in report["cross_split_duplicates"].items())
    )
    lines.extend(f"WARNING: {w}" for w in report["warnings"])
    return "\n".join(lines)


def plot_samples(split: Split, name: str, path: Path, seed: int = 0) -> None:
    """A PNG grid of `SAMPLES_PER_CLASS` random faces per class (one row per emotion) of one split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    generator = torch.Generator().manual_seed(seed)
    figure, axes = plt.subplots(
        len(EMOTIONS), SAMPLES_PER_CLASS, figsize=(SAMPLES_PER_CLASS, len(EMOTIONS) * 1.05), squeeze=False
    )
    for label, emotion in enumerate(EMOTIONS):
        members = torch.nonzero(split.labels == label).flatten()
        chosen = members[torch.randperm(len(members), generator=generator)[:SAMPLES_PER_CLASS]]
        for column, axis in enumerate(axes[label]):
            axis.set_xticks([])
            axis.set_yticks([])
            if column < len(chosen):
                axis.imshow(split.images[chosen[column]].tolist(), cmap="gray", vmin=0, vmax=255)
        axes[label][0].set_ylabel(emotion, fontsize=8)
    figure.suptitle(f"{name}: {SAMPLES_PER_CLASS} random faces per class", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_check(dataset: FER2013, report: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Write `out_dir/data_check.json` and a sample grid `out_dir/samples_<split>.png` per split."""
    out_dir = Path(out_dir)
    write_json(out_dir / REPORT_FILE, report)
    for name in SPLITS:
        plot_samples(dataset[name], name, out_dir / f"samples_{name}.png")
    return out_dir / REPORT_FILE


def run_data_check(
    source: str | os.PathLike, out_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """`fer-jax data check`: load `source`, check it, print the table and warnings, write the report and grids."""
    dataset = load_fer2013(source, cache_dir)
    report = check_source(dataset, cache_dir)
    write_check(dataset, report, out_dir)
    print(format_report(report))
    return report


def _name(split: Split, index: int) -> str:
    return split.names[index] if split.names else f"#{index}"
