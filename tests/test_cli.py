"""The command line: help that explains itself, one-line errors with exit code 2."""

from pathlib import Path

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
        (["train", "--set", "train.epochs=many"], "train.epochs='many': expected an integer"),
        (["train", "--resume", "runs/x", "--epochs", "3"], "drop --epochs"),
        (["train", "--resume", "/nowhere/run"], "nothing to resume"),
        (["evaluate", "/nowhere/run"], "no config.json here"),
        (["predict", "face.jpg", "--checkpoint", "/nowhere/w.msgpack"], "/nowhere/w.msgpack: no such file"),
        (["predict", "--video", "/nowhere/clip.mp4"], "/nowhere/clip.mp4: no such file"),
        (["predict", "--video", "/nowhere/clip.mp4", "--every", "0"], "--every 0: expected an integer >= 1"),
        (["export-weights", "/nowhere/run", "--out", "w.msgpack"], "no config.json here"),
    ],
)
def test_errors_are_one_line(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--epochs", "0"], "--epochs: train.epochs=0: expected an integer from 1 to 10000"),
        (["--batch-size", "0"], "--batch-size: train.batch_size=0: expected an integer from 1 to 32768"),
        (["--set", "data.train_limit=-5"], "data.train_limit=-5: expected an integer >= 0"),
        (["--set", "train.patience=-1"], "train.patience=-1: expected an integer >= 0"),
        (["--config", "bad.json"], "bad.json: not a readable JSON config (Expecting property name"),
    ],
)
def test_the_issue_51_mistakes_are_one_line_before_the_data_is_read(argv, expected, capsys, tmp_path, monkeypatch):
    """The mistakes of issue 51's table: one line naming the field, the value and what is allowed, exit 2, and
    nothing read or written (the data path exists nowhere, so an error about it would mean it was read first)."""
    monkeypatch.chdir(tmp_path)
    Path("bad.json").write_text("{bad")
    assert main(["train", "--data", "/nowhere/fer2013.zip", "--run-dir", "run", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fer-jax train: error: {err.split('error: ', 1)[1]}" and expected in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_predict_with_a_weights_description_as_checkpoint_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("bad.json").write_text("{bad")
    assert main(["predict", "--checkpoint", "bad.json", "photo.png"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == "fer-jax predict: error: bad.json: the weights' description; pass the weights file beside it "
        "(bad.msgpack)"
    )


def test_download_without_credentials_is_one_line(capsys, tmp_path, monkeypatch):
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle"))
    assert main(["download", "--dest", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert "kaggle.json" in err and "KAGGLE_USERNAME" in err and "\n" not in err
