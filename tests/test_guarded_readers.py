"""Every reader guards what it reads (issue 51): config files, weights descriptions, results and environment JSON,
metrics.jsonl, the decoded cache and its source record, ONNX files. A bad file is one line naming it (exit 2 from
the CLI), or, for what a cache derived, a warning and a rebuild."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from fer_jax.cli import main
from fer_jax.config import FIELD_RULES, FIELD_TYPES, MODEL_NAMES, Config, ConfigError
from fer_jax.data.cache import SOURCE_RECORD, CacheError, content_folder, file_sha256
from fer_jax.data.check import REPORT_FILE, check_source
from fer_jax.data.fer2013 import DECODED_FILE, DataError, load_fer2013
from fer_jax.files import FileFormatError, read_json, read_jsonl
from fer_jax.infer.onnx_export import OnnxClassifier
from fer_jax.infer.predict import WEIGHTS_DIR, load_weights
from fer_jax.models.layers import COMPUTE_DTYPES
from fer_jax.models.zoo import MODELS
from fer_jax.train.checkpoints import SET_ASIDE
from fer_jax.train.loop import write_environment

BAD_JSON_FILES = {
    "empty": b"",
    "truncated": b'{"train": {"epochs": 3',
    "binary garbage": bytes(range(256)) * 4,
    "absurd nesting": b"[" * 100_000 + b"]" * 100_000,
    "a list": b"[1, 2]",
}


def test_every_field_has_a_rule_and_the_choices_are_the_code_s():
    assert {key for key, kind in FIELD_TYPES.items() if kind is not bool} == set(FIELD_RULES)
    assert set(MODEL_NAMES) == set(MODELS)
    assert FIELD_RULES["model.compute_dtype"].test("auto")
    assert all(FIELD_RULES["model.compute_dtype"].test(name) for name in COMPUTE_DTYPES)


@pytest.mark.parametrize("kind", [*BAD_JSON_FILES, "missing", "a folder"])
def test_a_bad_config_file_is_one_line_naming_it(kind, tmp_path):
    path = tmp_path / "config.json"
    if kind == "a folder":
        path.mkdir()
    elif kind != "missing":
        path.write_bytes(BAD_JSON_FILES[kind])
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"train": {"epochs": True}}, "train.epochs=True: expected an integer"),
        ({"optim": {"learning_rate": 10**400}}, "optim.learning_rate=1000"),
        ({"train": {"epochs": {"a": 1}}}, "unknown config key 'train.epochs.a'"),
        ({"model": {"name": "seed_cnn", "width": 0.5}}, "model.width=0.5: 'seed_cnn' has width 1 only"),
        ({"data": {"source": "a\0b"}}, "data.source='a\\x00b': expected a path"),
    ],
)
def test_odd_config_values_are_one_line(raw, expected):
    with pytest.raises(ConfigError) as info:
        Config.from_dict(raw)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_read_json_and_read_jsonl_name_the_file_and_line(tmp_path):
    path = tmp_path / "results.json"
    for data in BAD_JSON_FILES.values():
        path.write_bytes(data)
        with pytest.raises(FileFormatError, match=f"^{path}: not"):
            read_json(path, "results JSON")
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"epoch": 1}\n\n[1]\n')
    with pytest.raises(FileFormatError, match=f"^{metrics} line 3: a JSON list, expected an object$"):
        read_jsonl(metrics)
    metrics.write_bytes(b'{"epoch": 1}\n\xff\xfe')
    with pytest.raises(FileFormatError, match=f"^{metrics}: not readable"):
        read_jsonl(metrics)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong layout"])
def test_a_bad_decoded_cache_is_rebuilt_and_says_so(damage, tiny_zip, tmp_path, capsys):
    reference = load_fer2013(tiny_zip, tmp_path)
    cached = content_folder(tiny_zip, tmp_path) / DECODED_FILE
    good = cached.read_bytes()
    if damage == "truncated":
        cached.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        cached.write_bytes(b"\x00garbage" * 1000)
    else:
        torch.save({"Training": {"images": torch.zeros(3, 48, 48)}}, cached)
    capsys.readouterr()
    again = load_fer2013(tiny_zip, tmp_path)
    err = capsys.readouterr().err
    assert f"warning: {cached}: unreadable decoded cache (" in err and f"decoding {tiny_zip} again" in err
    for name, split in reference.splits.items():
        assert torch.equal(again[name].images, split.images) and again[name].names == split.names
    load_fer2013(tiny_zip, tmp_path)  # rebuilt: read back without a warning
    assert capsys.readouterr().err == ""


def test_the_cache_source_record_is_rewritten_when_unreadable_and_refuses_another_archive(tiny_zip, tmp_path, capsys):
    folder = content_folder(tiny_zip, tmp_path)
    (folder / SOURCE_RECORD).write_bytes(b"\xff")
    assert content_folder(tiny_zip, tmp_path) == folder
    assert "writing it again" in capsys.readouterr().err
    assert json.loads((folder / SOURCE_RECORD).read_text())["sha256"] == file_sha256(tiny_zip)
    (folder / SOURCE_RECORD).write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(CacheError, match="cache folder of the archive with sha256 0000000000000000..., not of"):
        content_folder(tiny_zip, tmp_path)


def test_an_unreadable_cached_data_check_is_made_again(tiny_zip, tmp_path, capsys):
    dataset = load_fer2013(tiny_zip, tmp_path)
    report = check_source(dataset, tmp_path)
    (content_folder(tiny_zip, tmp_path) / REPORT_FILE).write_bytes(b"\xff")
    assert check_source(dataset, tmp_path) == report
    assert "; checking the data again" in capsys.readouterr().err


@pytest.fixture
def weights(tmp_path) -> Path:
    """A copy of the shipped seed CNN weights and their description."""
    for suffix in (".msgpack", ".json"):
        shutil.copy(WEIGHTS_DIR / f"seed_cnn{suffix}", tmp_path / f"w{suffix}")
    return tmp_path / "w.msgpack"


def describe(weights: Path, **changes) -> None:
    info = json.loads(weights.with_suffix(".json").read_text())
    weights.with_suffix(".json").write_text(json.dumps({**info, **changes}))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ({"model": "nope"}, "w.json: model='nope': expected one of 'seed_cnn', 'vgg_bn', 'resnet18'"),
        ({"model": None}, "w.json: model=None: expected a string"),
        ({"width": "wide"}, "w.json: model.width='wide': expected a number"),
        ({"model": "vgg_bn", "width": 0.375}, "w.msgpack: not the weights of the vgg_bn w.json describes"),
        ({"sha256": 5}, "w.json: no 'sha256' string"),
    ],
)
def test_a_malformed_weights_description_is_one_line(damage, expected, weights):
    describe(weights, **damage)
    with pytest.raises(DataError) as info:
        load_weights(weights)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_weights_that_are_garbage_with_a_matching_sha256_are_one_line(weights, capsys):
    weights.write_bytes(b"\x93garbage" * 100)
    describe(weights, sha256=hashlib.sha256(weights.read_bytes()).hexdigest())
    assert main(["predict", "--checkpoint", str(weights), "--no-detect", "face.png"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fer-jax predict: error: {weights}: not the weights of the seed_cnn") and "\n" not in err


@pytest.mark.parametrize("kind", list(BAD_JSON_FILES))
def test_an_unreadable_weights_description_is_one_line_from_the_cli(kind, weights, capsys):
    weights.with_suffix(".json").write_bytes(BAD_JSON_FILES[kind])
    assert main(["predict", "--checkpoint", str(weights), "--no-detect", "face.png"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fer-jax predict: error: {weights.with_suffix('.json')}: not ") and "\n" not in err


def test_an_onnx_model_of_another_interface_is_refused_and_bad_metadata_ignored(tmp_path, capsys):
    faces = helper.make_tensor_value_info("faces", TensorProto.UINT8, ["N", 48, 48])
    logits = helper.make_tensor_value_info("logits", TensorProto.UINT8, ["N", 48, 48])
    other = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    float_logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1])
    for name, (inputs, outputs) in {"other": ([other], [float_logits]), "good": ([faces], [logits])}.items():
        graph = helper.make_graph([helper.make_node("Identity", [inputs[0].name], ["logits"])], "g", inputs, outputs)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 10
        onnx.helper.set_model_props(model, {"fer_jax": "[not an object"})
        onnx.save(model, tmp_path / f"{name}.onnx")
    with pytest.raises(DataError, match=r"other.onnx: an ONNX model with inputs \[\('x', 'tensor\(float\)'\)\]"):
        OnnxClassifier(tmp_path / "other.onnx")
    classifier = OnnxClassifier(tmp_path / "good.onnx")
    assert "'fer_jax' metadata is not a JSON object; ignored" in capsys.readouterr().err
    assert classifier.info["backend"] == "onnxruntime"


def test_a_resume_appends_its_environment_and_sets_an_unreadable_one_aside(tmp_path):
    write_environment(tmp_path, 0)
    first = json.loads((tmp_path / "environment.json").read_text())
    write_environment(tmp_path, 3)
    write_environment(tmp_path, 5)
    environment = json.loads((tmp_path / "environment.json").read_text())
    assert {key: environment[key] for key in first} == first
    assert [resume["resumed_after"] for resume in environment["resumes"]] == [3, 5]
    (tmp_path / "environment.json").write_bytes(b"\x00garbage")
    write_environment(tmp_path, 6)
    environment = json.loads((tmp_path / "environment.json").read_text())
    assert environment["first_start"].startswith("unknown: ") and "git_commit" not in environment
    assert [resume["resumed_after"] for resume in environment["resumes"]] == [6]
    (kept,) = (tmp_path / SET_ASIDE).glob("*/environment.json")
    assert kept.read_bytes() == b"\x00garbage"
