"""Experiments on top of `fer_jax`: configs, benchmarks and the tables they feed.

Every experiment runs as `python -m experiments.NAME`, so this package owns the process: importing
it sets the project's XLA flags before any JAX computation (`fer_jax.environment.use_project_xla_flags`).
"""

from fer_jax.environment import use_project_xla_flags

use_project_xla_flags()
