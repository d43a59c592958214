"""What a run records about its machine, and the XLA flags and compute dtype the project picks for it."""

from pathlib import Path

import pytest

from fer_jax import environment
from fer_jax.config import ConfigError
from fer_jax.environment import PROJECT_XLA_FLAGS, cpu_features, use_project_xla_flags
from fer_jax.models import layers
from fer_jax.models.layers import resolve_compute_dtype

YNN_FLAG = PROJECT_XLA_FLAGS[0].split("=", 1)[0]


def test_project_flags_extend_the_users_and_never_replace_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert use_project_xla_flags() == " ".join(PROJECT_XLA_FLAGS)
    assert use_project_xla_flags() == " ".join(PROJECT_XLA_FLAGS)  # once only

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert use_project_xla_flags() == " ".join(["--xla_force_host_platform_device_count=2", *PROJECT_XLA_FLAGS])

    mine = f"{YNN_FLAG}= --xla_force_host_platform_device_count=2"  # the user's own value of the same flag wins
    monkeypatch.setenv("XLA_FLAGS", mine)
    assert use_project_xla_flags() == mine


def test_cpu_features_come_from_the_flags_line(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Some Xeon\nflags\t\t: fpu avx2 fma avx512f avx512_bf16 amx_tile amx_bf16 sse\n")
    assert cpu_features(cpuinfo) == ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]
    assert cpu_features(tmp_path / "missing") == []


@pytest.mark.parametrize(("units", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_auto_compute_dtype_is_bfloat16_only_where_the_cpu_multiplies_it(
    monkeypatch: pytest.MonkeyPatch, units: bool, expected: str
) -> None:
    monkeypatch.setattr(layers, "has_bfloat16_units", lambda: units)
    assert resolve_compute_dtype("auto") == expected  # the tests run on the CPU backend
    assert resolve_compute_dtype("float32") == "float32" and resolve_compute_dtype("bfloat16") == "bfloat16"
    with pytest.raises(ConfigError, match="unknown compute_dtype"):
        resolve_compute_dtype("float16")


def test_results_record_the_cpu_and_the_xla_flags() -> None:
    info = environment.environment_info()
    assert info["cpu_features"] == cpu_features()
    assert YNN_FLAG in info["xla_flags"]  # tests/conftest.py applies the project's flags, as the CLI does
