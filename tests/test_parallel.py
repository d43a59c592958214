"""Data parallelism over a device mesh, on 4 CPU devices made by XLA_FLAGS (in a subprocess: JAX reads the flag
once)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fer_jax.config import Config, ConfigError
from fer_jax.train.parallel import check_divisible, make_mesh

ROOT = Path(__file__).resolve().parent.parent

FOUR_DEVICES = textwrap.dedent("""
    import json, sys
    from fer_jax.environment import use_project_xla_flags
    use_project_xla_flags()  # as fer-jax runs, beside the device count set below
    import jax, jax.numpy as jnp
    from fer_jax.train import parallel
    from fer_jax.config import Config
    from fer_jax.train.steps import init_state

    assert len(jax.devices()) == 4
    images = jax.random.uniform(jax.random.key(0), (16, 1, 48, 48))
    labels = jax.random.randint(jax.random.key(1), (16,), 0, 7)
    out = {}
    for devices in (1, 4):
        config = Config()
        config.train.devices = devices
        state, steps = init_state(config, 10)
        for _ in range(2):
            state, metrics = steps.train(state, images, labels)
        kernel = state.params["dense2"]["kernel"].value
        out[devices] = {"loss": float(metrics["loss"]), "kernel": jax.device_get(kernel).tolist(),
                        "mesh": steps.mesh.size, "replicated": kernel.sharding.is_fully_replicated,
                        "devices": len(kernel.sharding.device_set)}
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_four_devices_train_like_one():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", FOUR_DEVICES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = json.loads(done.stdout.split("RESULT", 1)[1])
    one, four = out["1"], out["4"]
    assert (one["mesh"], four["mesh"]) == (1, 4)
    assert four["replicated"] and four["devices"] == 4 and one["devices"] == 1
    assert four["loss"] == pytest.approx(one["loss"], rel=1e-4)
    assert max(abs(a - b) for row_a, row_b in zip(one["kernel"], four["kernel"]) for a, b in zip(row_a, row_b)) < 1e-5


def test_batch_must_split_evenly_over_the_devices():
    mesh = make_mesh(1)
    check_divisible(mesh, 7, "train.batch_size")
    with pytest.raises(ConfigError, match="device"):
        make_mesh(10_000)
    config = Config()
    assert config.train.batch_size % 8 == 0 and config.train.eval_batch_size % 8 == 0  # splits over up to 8 GPUs
