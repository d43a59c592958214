"""Experiments as configs: one small module per experiment, run by `python -m experiments.run NAME`.

Each module has a docstring (the command, the expected runtime on CPU and GPU,
and the expected result once measured) and `get_config() -> fer_jax.config.Config`.
Optional:
- `QUICK_OVERRIDES`: `key=value` strings applied after `fer_jax.config.quick` under `--quick`;
- `run(config, seeds, run_root, quick_run, argv) -> dict`: runs the experiment itself
  instead of the runner's seed loop (e.g. `compare_frameworks`), returning the summary
  fields to write into `run_root/summary.json`.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from fer_jax.config import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the experiment configs in this folder."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))


def summary_line(name: str) -> str:
    """The first line of a config module's docstring (read without importing it)."""
    docstring = ast.get_docstring(ast.parse((CONFIG_DIR / f"{name}.py").read_text())) or ""
    return docstring.strip().splitlines()[0] if docstring.strip() else ""


def load(name_or_path: str) -> tuple[str, ModuleType]:
    """An experiment's name and module, from a name in this folder or a path to a .py file."""
    path = Path(name_or_path)
    if path.suffix == ".py" or path.parent != Path("."):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such config file")
        spec = importlib.util.spec_from_file_location(f"experiment_config_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        name = path.stem
    elif name_or_path in available():
        module = importlib.import_module(f"{__name__}.{name_or_path}")
        name = name_or_path
    else:
        raise ConfigError(
            f"unknown experiment config {name_or_path!r}; known: {', '.join(available())} "
            "(or give a path to a .py file)"
        )
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"{name_or_path}: the config module has no get_config() function")
    return name, module
