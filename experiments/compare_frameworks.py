"""JAX vs PyTorch on the same network, data, recipe and seeds, in one run on one machine.

    python -m experiments.compare_frameworks --quick --seeds 3 --out results/compare_cpu.json

The same as `fer-jax compare`; the measurement lives in `fer_jax.compare`.
"""

import sys

from fer_jax.compare import main

if __name__ == "__main__":
    sys.exit(main())
