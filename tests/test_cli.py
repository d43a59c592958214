"""The command line: help that explains itself, one-line errors with exit code 2."""

import pytest

from fer_jax.cli import main


@pytest.mark.parametrize("command", [[], ["download"], ["train"], ["evaluate"], ["predict"], ["export-weights"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: fer-jax" in capsys.readouterr().out


def test_train_help_lists_config_keys(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "optim.learning_rate" in out and "--resume" in out and "PrivateTest" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--data", "/nowhere/fer2013.zip"], "/nowhere/fer2013.zip: no such file or folder"),
        (["train", "--set", "train.epochz=3"], "unknown config key 'train.epochz'"),
        (["train", "--set", "train.epochs=many"], "train.epochs must be int"),
        (["train", "--resume", "runs/x", "--epochs", "3"], "drop --epochs"),
        (["train", "--resume", "/nowhere/run"], "nothing to resume"),
        (["evaluate", "/nowhere/run"], "no config.json here"),
        (["predict", "face.jpg", "--checkpoint", "/nowhere/w.msgpack"], "/nowhere/w.msgpack: no such file"),
        (["predict", "--video", "/nowhere/clip.mp4"], "/nowhere/clip.mp4: no such file"),
        (["predict", "--video", "/nowhere/clip.mp4", "--every", "0"], "every must be 1 or more"),
        (["export-weights", "/nowhere/run", "--out", "w.msgpack"], "no config.json here"),
    ],
)
def test_errors_are_one_line(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err and "Traceback" not in err


def test_download_without_credentials_is_one_line(capsys, tmp_path, monkeypatch):
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle"))
    assert main(["download", "--dest", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert "kaggle.json" in err and "KAGGLE_USERNAME" in err and "\n" not in err
