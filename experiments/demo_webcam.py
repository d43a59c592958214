"""The webcam path of `fer-jax demo` in a real browser: the frames/s and faces/s its page shows for a 640x480 stream
with one face.

    python -m experiments.demo_webcam --duration 30 --out results/demo_webcam_cpu.json

Starts `fer-jax demo` on a free port of 127.0.0.1, opens its page in headless Chromium (experiments/demo_page.py)
with Chromium's fake camera streaming a 640x480 clip of scikit-image's astronaut, starts the webcam stream, lets it
settle for `--settle` s, then reads the page's own measurement ("N faces/s, M frames/s (last 3 s); K ms for this
frame") once a second for `--duration` s. The browser runs on the same machine as the server, as a user's does on
a laptop. Records every sample, the median and minimum frames/s and faces/s, the median server time per frame, the
machine, the versions and the command; writes the JSON (`--out`) and prints a table. Stops by itself.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from experiments.demo_page import Page, browser_missing, demo_server, write_y4m

LINE = re.compile(r"([\d.]+) faces/s, ([\d.]+) frames/s .*?; (\d+) ms for this frame")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.demo_webcam",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of samples (default: %(default)s)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before the first (default: %(default)s)")
    parser.add_argument("--out", default="results/demo_webcam_cpu.json", help="results JSON (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from fer_jax.commands import run_command

    args = build_parser().parse_args(argv)
    command = shlex.join(["python", "-m", "experiments.demo_webcam", *(sys.argv[1:] if argv is None else argv)])
    return run_command("python -m experiments.demo_webcam", lambda: run(args, command))


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    import skimage.data

    from fer_jax.data.fer2013 import DataError
    from fer_jax.environment import cpu_model, cpuinfo_field, environment_info
    from fer_jax.files import write_json

    if missing := browser_missing():
        raise DataError(f"this benchmark drives a browser: it {missing}")
    samples: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="fer-jax-demo-webcam-") as folder:
        folder = Path(folder)
        with demo_server(folder / "server.log") as (url, _):
            page = Page(url, write_y4m(folder / "astronaut.y4m", skimage.data.astronaut()))
            try:
                page.start_webcam()
                page.wait(lambda: LINE.search(page.text("webcam-message")), "the first measured frames")
                time.sleep(args.settle)
                end = time.monotonic() + args.duration
                while time.monotonic() < end:
                    line = page.text("webcam-message")
                    if match := LINE.search(line):
                        faces_per_s, frames_per_s, frame_ms = map(float, match.groups())
                        samples.append({"faces_per_s": faces_per_s, "frames_per_s": frames_per_s, "frame_ms": frame_ms})
                    time.sleep(1.0)
                shown = page.shown_image("webcam-output")
            finally:
                page.stop_webcam()
                page.close()
    if not samples:
        raise DataError("the page showed no measurement")
    env = environment_info()
    report = {
        "benchmark": "experiments/demo_webcam.py: the frames/s and faces/s `fer-jax demo`'s page shows for a webcam",
        "data": "no dataset: Chromium's fake camera streaming scikit-image's astronaut on a gray 640x480 canvas",
        "duration_s": args.duration,
        "frame_size": list(shown),
        "frames_per_s": {
            "median": statistics.median(s["frames_per_s"] for s in samples),
            "min": min(s["frames_per_s"] for s in samples),
        },
        "faces_per_s": {
            "median": statistics.median(s["faces_per_s"] for s in samples),
            "min": min(s["faces_per_s"] for s in samples),
        },
        "server_ms_per_frame_median": statistics.median(s["frame_ms"] for s in samples),
        "samples": samples,
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "cpu_flags": (cpuinfo_field("flags") or "").split(),
            "load_average_at_end": os.getloadavg(),
        },
        "device": env["device"],
        "python": env["python"],
        "platform": env["platform"],
        "versions": {
            **env["versions"],
            **{name: importlib.metadata.version(name) for name in ("gradio", "selenium", "onnxruntime")},
        },
        "git_commit": env["git_commit"],
        "command": command,
    }
    write_json(args.out, report)
    print("| frames/s median (min) | faces/s median (min) | server ms/frame | frame |")
    print("| ---: | ---: | ---: | --- |")
    print(
        f"| {report['frames_per_s']['median']:.1f} ({report['frames_per_s']['min']:.1f}) | "
        f"{report['faces_per_s']['median']:.1f} ({report['faces_per_s']['min']:.1f}) | "
        f"{report['server_ms_per_frame_median']:.0f} | {shown[0]}x{shown[1]} |"
    )
    print(f"{report['machine']['cpu']} ({report['machine']['cores']} cores); `{command}`")
    print(f"Wrote {args.out}")
    return report


if __name__ == "__main__":
    raise SystemExit(main())
