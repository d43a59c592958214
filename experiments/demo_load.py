"""Load test of `fer-jax demo`: concurrent clients on 127.0.0.1 send a 640x480 photo to the page's photo endpoint.

    python -m experiments.demo_load --clients 20 --duration 60 --out results/demo_load_cpu.json
    python -m experiments.demo_load --clients 1 --duration 60 --out results/demo_latency_cpu.json

Starts `fer-jax demo` in its own process on a free port of 127.0.0.1 and waits for it (at most `--start-timeout` s),
sends one untimed request, then runs `--clients` threads for `--duration` s. Each thread is one browser tab: its own
`gradio_client.Client` (its own session) uploads the photo, waits for the annotated result (the image downloaded
too), and sends the next. A request counts as an error when it raises or its result is not the photo's one face; as
lost when no result has come `--grace` s after the end. The run fails if the server dies. The server runs every
request through Gradio's queue one at a time (`fer_jax.demo.CONCURRENCY`): the requests beyond that wait there.

Records the latency of each request (submit to result, upload and download included) as p50, p95 and max; requests
per second; errors and lost requests; the server's resident memory (RSS) after the untimed request, at the end and
its peak (sampled each second); the machine (CPU model, cores, flags), the versions and the command. Writes the
JSON (`--out`) and prints a table. Stops by itself: the server is stopped when the run ends or fails.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from experiments.demo_page import demo_server, run_record

PHOTO_SIZE = (640, 480)
EXPECTED = "1 face: 1. happy"
"""What the page says for the test photo (the astronaut smiles)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.demo_load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default: %(default)s)")
    parser.add_argument(
        "--grace", type=float, default=60.0, help="seconds the last requests get to finish (default: %(default)s)"
    )
    parser.add_argument(
        "--start-timeout", type=float, default=300.0, help="seconds the server gets to start (default: %(default)s)"
    )
    parser.add_argument("--out", default="results/demo_load_cpu.json", help="results JSON (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from fer_jax.commands import run_command

    args = build_parser().parse_args(argv)
    command = shlex.join(["python", "-m", "experiments.demo_load", *(sys.argv[1:] if argv is None else argv)])
    return run_command("python -m experiments.demo_load", lambda: run(args, command))


def test_photo(folder: Path) -> Path:
    """scikit-image's astronaut (one smiling face) on a gray 640x480 canvas, as a JPEG."""
    import cv2
    import numpy as np
    import skimage.data

    width, height = PHOTO_SIZE
    canvas = np.full((height, width, 3), 128, np.uint8)
    face = cv2.resize(skimage.data.astronaut(), (height, height), interpolation=cv2.INTER_AREA)
    canvas[:, (width - height) // 2 : (width + height) // 2] = cv2.cvtColor(face, cv2.COLOR_RGB2BGR)
    path = folder / "astronaut_640x480.jpg"
    cv2.imwrite(str(path), canvas)
    return path


def connect(url: str, downloads: Path) -> Any:
    """A client of the demo at `url`, as a new browser tab is: its own session."""
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False, download_files=str(downloads))


def request(client: Any, photo: Path, timeout: float) -> dict[str, Any]:
    """Send the photo, wait for the annotated result: latency, or an error, or lost (no result within `timeout`)."""
    from gradio_client import handle_file

    start = time.monotonic()
    job = client.submit(handle_file(str(photo)), api_name="/photo")
    record: dict[str, Any] = {"start": start}
    try:
        result = job.result(timeout=max(1.0, timeout))
        record["latency_s"] = time.monotonic() - start
        if EXPECTED not in result[1] or not Path(result[0]).is_file():
            record["error"] = f"unexpected result: {result[1]!r}"
    except TimeoutError:
        record["lost"] = True
    except Exception as err:  # any failure of the request is what this test counts
        record["error"] = f"{type(err).__name__}: {err}"[:300]
    return record


def client_loop(url: str, photo: Path, end: float, grace: float, downloads: Path, out: list[dict[str, Any]]) -> None:
    """One client: request after request until `end`; each request's outcome appended to `out`."""
    client = connect(url, downloads)
    while time.monotonic() < end:
        out.append(request(client, photo, end + grace - time.monotonic()))


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    from fer_jax.files import write_json

    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    with tempfile.TemporaryDirectory(prefix="fer-jax-demo-load-") as folder:
        folder = Path(folder)
        photo = test_photo(folder)
        with demo_server(folder / "server.log", timeout=args.start_timeout) as (url, pid):
            warm = request(connect(url, folder), photo, args.grace)  # one untimed request
            if "error" in warm or "lost" in warm:
                raise RuntimeError(f"the untimed request failed: {warm}")
            rss_start = rss_mb(pid)
            peak = [rss_start]
            records: list[dict[str, Any]] = []
            end = time.monotonic() + args.duration
            threads = [
                threading.Thread(target=client_loop, args=(url, photo, end, args.grace, folder, records), daemon=True)
                for _ in range(args.clients)
            ]
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads) and time.monotonic() < end + args.grace + 30:
                peak.append(rss_mb(pid))
                time.sleep(1.0)
            rss_end = rss_mb(pid)
            still_running = sum(thread.is_alive() for thread in threads)
    latencies = sorted(r["latency_s"] for r in records if "latency_s" in r and "error" not in r)
    report = {
        "benchmark": "experiments/demo_load.py: concurrent clients send a 640x480 photo to `fer-jax demo`",
        "data": "no dataset: scikit-image's astronaut on a gray 640x480 canvas (one face)",
        "clients": args.clients,
        "duration_s": args.duration,
        "requests": len(records) + still_running,
        "answered": len(latencies),
        "errors": sum("error" in r for r in records),
        "error_examples": sorted({r["error"] for r in records if "error" in r})[:5],
        "lost": sum(r.get("lost", False) for r in records) + still_running,
        "requests_per_s": len(latencies) / args.duration,
        "latency_s": {
            "p50": percentile(latencies, 50) if latencies else None,
            "p95": percentile(latencies, 95) if latencies else None,
            "max": latencies[-1] if latencies else None,
        },
        "server_rss_mb": {"start": rss_start, "end": rss_end, "peak": max(peak), "each_second": peak},
        "server_rss_growth": rss_end / rss_start - 1,
        **run_record(command, ("gradio", "gradio_client", "onnxruntime")),
    }
    write_json(args.out, report)
    print(format_table(report))
    print(f"Wrote {args.out}")
    return report


def format_table(report: dict[str, Any]) -> str:
    latency, rss = report["latency_s"], report["server_rss_mb"]

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    return "\n".join(
        [
            "| clients | s | requests | answered | errors | lost | req/s | p50 s | p95 s | max s "
            "| RSS start -> end MB |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {report['clients']} | {report['duration_s']:g} | {report['requests']} | {report['answered']} | "
            f"{report['errors']} | {report['lost']} | {report['requests_per_s']:.1f} | {seconds(latency['p50'])} | "
            f"{seconds(latency['p95'])} | {seconds(latency['max'])} | {rss['start']:.0f} -> {rss['end']:.0f} "
            f"({100 * report['server_rss_growth']:+.1f}%) |",
            f"{report['machine']['cpu']} ({report['machine']['cores']} cores); `{report['command']}`",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
