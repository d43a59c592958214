import json

import pytest

from fer_jax.config import Config, ConfigError, quick


def test_round_trip_through_json(tmp_path):
    config = Config()
    config.apply_overrides(["optim.name=sgd", "optim.learning_rate=0.01", "train.epochs=3", "data.augment=false"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    loaded = Config.load(path)
    assert loaded == config
    assert (loaded.optim.name, loaded.optim.learning_rate, loaded.train.epochs, loaded.data.augment) == (
        "sgd",
        0.01,
        3,
        False,
    )


@pytest.mark.parametrize(
    "override", ["train.nope=1", "nope.epochs=1", "train.epochs=three", "data.augment=maybe", "train"]
)
def test_bad_overrides_are_one_line_errors(override):
    with pytest.raises(ConfigError) as info:
        Config().apply_overrides([override])
    assert "\n" not in str(info.value)


def test_quick_shrinks_the_run():
    config = quick(Config())
    assert config.train.epochs <= 2 and 0 < config.data.train_limit <= 4096


def test_data_source_falls_back_to_environment(monkeypatch):
    monkeypatch.setenv("FER2013_ZIP", "/somewhere/fer2013.zip")
    assert Config().data.resolved_source() == "/somewhere/fer2013.zip"
    monkeypatch.delenv("FER2013_ZIP")
    assert Config().data.resolved_source() == "data/fer2013.zip"


def test_a_config_json_from_before_a_key_retired_still_loads_but_the_key_cannot_be_set():
    old = Config().to_dict()
    old["model"]["conv_impl"] = "winograd"  # written by versions with hand-written CPU convolutions
    assert Config.from_dict(old) == Config()
    with pytest.raises(ConfigError, match="'model.conv_impl' is gone: every model runs XLA's own convolution"):
        Config().apply_overrides(["model.conv_impl=xla"])
    with pytest.raises(ConfigError, match="unknown config key 'model.conv_imp'"):
        Config.from_dict({"model": {"conv_imp": "xla"}})
