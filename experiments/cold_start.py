"""Cold start of `fer-jax predict`: a fresh process on one photo, with an empty and a warm compilation cache.

    python -m experiments.cold_start --data ../shared/datasets/fer2013.zip --baseline ../base \\
        --out results/cold_start_cpu.json

Each timing is the wall time of a new interpreter, from its start to its exit: `python -m fer_jax predict
PHOTO` (the CLI) and `python -c "import fer_jax; fer_jax.predict(PHOTO)"` (the Python API), on a 640x480 JPEG
of scikit-image's astronaut. "empty" gives each process a new compilation cache folder, as on a first run;
"warm" the folder an untimed run filled. `--baseline` names another checkout of fer-jax (an older commit,
say) that is measured in the same run, its processes interleaved with this one's and the order turned on every
repeat, so the machine's drift spreads over both. Per checkout it also records what the predict process spends
importing (`python -X importtime`, per top-level package) and, on a folder of the pipeline benchmark's
scenes (`experiments.pipeline`: PrivateTest faces, photos and face-free images), the time per image after
the first and each image's faces, compared face for face between the checkouts. The `fer` package, where it is
installed, is timed on the same photo (`FER().detect_emotions`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2

from experiments.scenes import SCENE_SEED, build_face_free, build_fer_scenes, build_photo_scenes, face_free_photos
from fer_jax.errors import DataError

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"warm": 3.0, "empty": 5.0, "batch_seconds_per_image": 0.025}
"""Issue 54's bounds: seconds for a cold `fer-jax predict photo.jpg`, and per image after the first of a folder."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.cold_start",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, help="the FER-2013 archive the scenes are built from")
    parser.add_argument("--baseline", help="another fer-jax checkout to measure in the same run (e.g. main)")
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per measurement (default: 5)")
    parser.add_argument("--out", required=True, help="the results JSON")
    return parser


def photo_640x480(folder: Path) -> Path:
    """The astronaut (one smiling face, public domain) resized to 480x480 and padded to 640x480, as a JPEG."""
    import skimage.data

    rgb = cv2.resize(skimage.data.astronaut(), (480, 480))
    path = folder / "astronaut_640x480.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(cv2.copyMakeBorder(rgb, 0, 0, 80, 80, cv2.BORDER_REFLECT), cv2.COLOR_RGB2BGR))
    return path


def write_scenes(data: str, folder: Path) -> int:
    """The pipeline benchmark's PrivateTest scenes, photos and face-free images as PNG files; their count."""
    from fer_jax.data.fer2013 import load_fer2013

    split = load_fer2013(data).splits["PrivateTest"]
    free = face_free_photos()
    seed = SCENE_SEED["PrivateTest"]
    scenes = [
        *build_fer_scenes(split.images, split.labels, seed, list(free.values())),
        *build_photo_scenes(seed, list(free.values())),
        *build_face_free(seed, free),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    for scene in scenes:
        cv2.imwrite(str(folder / f"{scene.name}.png"), scene.image)
    return len(scenes)


def environment(checkout: Path, compile_cache: Path) -> dict[str, str]:
    """This process's environment for a run of `checkout` with its own compilation cache folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "PYTHONPATH")}
    return {**env, "PYTHONPATH": str(checkout), "FER_JAX_COMPILE_CACHE": str(compile_cache)}


def timed(command: list[str], checkout: Path, compile_cache: Path) -> tuple[float, str]:
    """Wall seconds of `command` run in `checkout` (a fresh process), and its stderr."""
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=checkout, env=environment(checkout, compile_cache), capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"{checkout}: {' '.join(command[1:4])} ... exited {done.returncode}: {last}")
    return seconds, done.stderr


def cli(photo: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "fer_jax", "predict", str(photo), "--out", str(out)]


def api(photo: Path) -> list[str]:
    return [sys.executable, "-c", f"import fer_jax; fer_jax.predict({str(photo)!r})"]


def import_seconds(stderr: str) -> dict[str, float]:
    """`python -X importtime`'s report as seconds per top-level package: each module's own (self) time added to
    its package's, wherever it was imported from (largest first)."""
    per_package: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        own, _, name = line.removeprefix("import time:").split("|")
        if not own.strip().isdigit():  # the header line
            continue
        root = name.strip().split(".")[0]
        per_package[root] = per_package.get(root, 0.0) + int(own) / 1e6
    return dict(sorted(per_package.items(), key=lambda item: -item[1]))


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def faces_of(predictions: Path) -> dict[str, list[dict[str, Any]]]:
    return {Path(image["file"]).name: image.get("faces", []) for image in json.loads(predictions.read_text())["images"]}


def compare_faces(ours: dict[str, list[dict]], theirs: dict[str, list[dict]]) -> dict[str, Any]:
    """Face-for-face agreement of two checkouts' predictions on the same images."""
    images = sorted(set(ours) | set(theirs))
    same_boxes = [
        name for name in images if [f["box"] for f in ours.get(name, [])] == [f["box"] for f in theirs.get(name, [])]
    ]
    pairs = [(a, b) for name in same_boxes for a, b in zip(ours.get(name, []), theirs.get(name, []))]
    return {
        "images": len(images),
        "images_with_the_same_boxes": len(same_boxes),
        "faces": sum(len(ours.get(name, [])) for name in images),
        "faces_with_the_same_emotion": sum(a["emotion"] == b["emotion"] for a, b in pairs),
        "largest_probability_difference": max(
            (abs(a["probabilities"][e] - b["probabilities"][e]) for a, b in pairs for e in a["probabilities"]),
            default=0.0,
        ),
    }


def peer_seconds(photo: Path, repeats: int) -> dict[str, Any]:
    """The `fer` package (Haar detector) on the photo, fresh processes, where it is installed."""
    if importlib.util.find_spec("fer") is None:
        return {"installed": False}
    script = f"import cv2; from fer import FER; FER().detect_emotions(cv2.imread({str(photo)!r}))"
    times = [timed([sys.executable, "-c", script], ROOT, Path(tempfile.mkdtemp()))[0] for _ in range(repeats)]
    return {"installed": True, "version": importlib.metadata.version("fer"), "seconds": spread(times)}


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    checkouts = {"this": ROOT, **({"baseline": Path(args.baseline).resolve()} if args.baseline else {})}
    photo = photo_640x480(work)
    scene_count = write_scenes(args.data, work / "scenes")
    warm = {name: work / f"cache-{name}" for name in checkouts}
    for name, checkout in checkouts.items():  # untimed: fills the warm caches (and the OS's file cache)
        timed(cli(photo, work / "out"), checkout, warm[name])
        timed(api(photo), checkout, warm[name])
    runs: dict[str, dict[str, list[float]]] = {
        name: {"cli empty": [], "cli warm": [], "api empty": [], "api warm": []} for name in checkouts
    }
    for repeat in range(args.repeats):
        order = list(checkouts) if repeat % 2 == 0 else list(reversed(checkouts))
        for name in order:
            checkout, times = checkouts[name], runs[name]
            times["cli empty"].append(timed(cli(photo, work / "out"), checkout, Path(tempfile.mkdtemp(dir=work)))[0])
            times["cli warm"].append(timed(cli(photo, work / "out"), checkout, warm[name])[0])
            times["api empty"].append(timed(api(photo), checkout, Path(tempfile.mkdtemp(dir=work)))[0])
            times["api warm"].append(timed(api(photo), checkout, warm[name])[0])
            print(
                f"repeat {repeat + 1}/{args.repeats} {name}: "
                + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                flush=True,
            )
    report: dict[str, Any] = {"checkouts": {}}
    for name, checkout in checkouts.items():
        _, stderr = timed([sys.executable, "-X", "importtime", *cli(photo, work / "out")[1:]], checkout, warm[name])
        folder_out = work / f"scenes-{name}"
        timed(cli(work / "scenes", folder_out), checkout, warm[name])  # untimed: compiles the batch shapes
        batch = [timed(cli(work / "scenes", folder_out), checkout, warm[name])[0] for _ in range(2)]
        single = statistics.median(runs[name]["cli warm"])
        report["checkouts"][name] = {
            "path": str(checkout),
            "git_commit": git_commit(checkout),
            **{key: spread(values) for key, values in runs[name].items()},
            "import_seconds": import_seconds(stderr),
            "folder": {
                "images": scene_count,
                "seconds": spread(batch),
                "seconds_per_image_after_the_first": (statistics.median(batch) - single) / (scene_count - 1),
            },
        }
    if args.baseline:
        report["same_predictions"] = compare_faces(
            faces_of(work / "scenes-this" / "predictions.json"), faces_of(work / "scenes-baseline" / "predictions.json")
        )
    report["fer_peer"] = peer_seconds(photo, args.repeats)
    return report


def git_commit(checkout: Path) -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True)
    return done.stdout.strip() or None


def format_table(report: dict[str, Any]) -> str:
    """Median [min, max] seconds per checkout and measurement, and the folder's seconds per image."""
    columns = ("cli empty", "cli warm", "api empty", "api warm")
    lines = [
        "| checkout | commit | " + " | ".join(f"{c} (s)" for c in columns) + " | folder: s/image after the first |",
        "| --- | --- |" + " ---: |" * (len(columns) + 1),
    ]
    for name, row in report["checkouts"].items():
        cells = [f"{row[c]['median']:.2f} [{row[c]['min']:.2f}, {row[c]['max']:.2f}]" for c in columns]
        per_image = row["folder"]["seconds_per_image_after_the_first"]
        lines.append(f"| {name} | {(row['git_commit'] or '?')[:7]} | {' | '.join(cells)} | {per_image:.4f} |")
    return "\n".join(lines)


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from fer_jax.data.cache import file_sha256
    from fer_jax.environment import cpu_features, environment_info
    from fer_jax.files import write_json

    with tempfile.TemporaryDirectory(prefix="fer-jax-cold-start-") as folder:
        measured = measure(args, Path(folder))
    env = environment_info()
    report = {
        "benchmark": "experiments/cold_start.py: wall time of fresh `fer-jax predict` processes on one 640x480 photo",
        "command": " ".join(["python", "-m", "experiments.cold_start", *argv]),
        "machine": env["device"],
        "cpu_features": cpu_features(),
        "load_average": os.getloadavg(),
        "git_commit": env["git_commit"],
        "versions": env["versions"],
        "dataset_sha256": file_sha256(args.data),
        "data": "PrivateTest scenes of experiments.pipeline for the folder rows; the photo is scikit-image's astronaut",
        "goals_seconds": GOALS,
        **measured,
    }
    write_json(args.out, report)
    print(format_table(report))
    if "same_predictions" in report:
        print("same predictions:", json.dumps(report["same_predictions"]))
    print(f"Wrote {args.out}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    from fer_jax.commands import run_command

    args = build_parser().parse_args(argv)
    return run_command(
        "python -m experiments.cold_start", lambda: run(args, list(sys.argv[1:] if argv is None else argv))
    )


if __name__ == "__main__":
    raise SystemExit(main())
