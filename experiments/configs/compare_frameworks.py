"""JAX/Flax against the PyTorch baseline: same network, config, batches and seeds, one process (`fer_jax.compare`).

Command:
    python -m experiments.run compare_frameworks --seeds 3
    python -m experiments.run compare_frameworks --quick --seeds 1
    (the same measurement as `fer-jax compare`, which writes results/compare_<device>.json)

Writes runs/compare_frameworks/<timestamp>/compare.json and compare.png (`fer_jax.compare`'s report:
accuracy, s/epoch, images/s, peak memory, JAX/PyTorch ratios) and summary.json with a row per
framework for `python -m experiments.table`. The runs themselves go to runs/compare/<timestamp>/.

Expected runtime: CPU (2-core AMD EPYC): not measured yet. GPU: not measured yet.
Expected result: not measured yet.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fer_jax.config import Config


def get_config() -> Config:
    return Config()


def run(config: Config, seeds: int, run_root: Path, quick_run: bool, argv: list[str]) -> dict[str, Any]:
    """Train both frameworks with `fer_jax.compare.compare`; return the summary fields per framework."""
    # Before JAX starts its backend: it would otherwise take 75% of GPU memory and starve PyTorch.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    from fer_jax.compare import compare

    report = compare(config, seeds, run_root / "compare.json", quick_run=quick_run, argv=argv)
    machines = {"jax": report["machine"], "pytorch": report["torch_device"]}
    return {
        "compare_report": str(run_root / "compare.json"),
        "frameworks": {
            framework: {"machine": machines[framework], "run_dirs": [run["run_dir"] for run in entry["runs"]]}
            for framework, entry in report["frameworks"].items()
        },
    }
