"""`fer-jax demo`: its results against predict's, bad input as messages, and the page itself in a real headless
Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium), the webcam through Chromium's fake
capture device."""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

import fer_jax
from experiments.demo_page import Page, browser_missing, demo_server, write_y4m
from fer_jax.cli import main
from fer_jax.data.fer2013 import DataError
from fer_jax.demo import (
    DISPLAY_MAX_SIDE,
    VIDEO_MAX_SECONDS,
    DisplayFiles,
    Meter,
    example_images,
    for_display,
    is_loopback,
    model_choices,
    photo_result,
    video_result,
)
from fer_jax.infer.detect import DEFAULT_DETECTOR
from fer_jax.infer.predict import DEFAULT_WEIGHTS, shipped_weights

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = str(DEFAULT_WEIGHTS)


def write_bgr(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def write_clip(path: Path, rgb: np.ndarray, frames: int, fps: float = 10.0) -> Path:
    """A short MPEG-4 video of one still image, as OpenCV writes it."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (rgb.shape[1], rgb.shape[0]))
    for _ in range(frames):
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def two_faces() -> np.ndarray:
    """The astronaut beside Grace Hopper (matplotlib's sample photo): two faces, RGB."""
    hopper = cv2.cvtColor(
        cv2.imread(str(next(p for p in example_images() if p.stem == "grace_hopper"))), cv2.COLOR_BGR2RGB
    )
    hopper = cv2.resize(hopper, (round(hopper.shape[1] * 512 / hopper.shape[0]), 512), interpolation=cv2.INTER_AREA)
    return np.hstack([skimage.data.astronaut(), hopper])


# Without a browser ---------------------------------------------------------------------------------------------


def test_without_gradio_the_demo_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if the `demo` extra were not installed
    assert main(["demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'fer-jax[demo]'" in err, err


def test_only_loopback_addresses_count_as_this_machine():
    assert all(is_loopback(host) for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "192.168.1.10", "::", "example.org"))


def test_a_missing_or_broken_checkpoint_stops_the_command_in_one_line(tmp_path, capsys):
    pytest.importorskip("gradio", reason="needs the demo extra's gradio")
    (tmp_path / "broken.msgpack").write_bytes(b"not weights")
    (tmp_path / "broken.json").write_text(json.dumps({"sha256": "0" * 64, "model": "seed_cnn"}))
    for given, shown in ((tmp_path / "missing", "no such file or folder"), (tmp_path / "broken.msgpack", "sha256")):
        assert main(["demo", "--checkpoint", str(given)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("fer-jax demo: error:") and shown in err[0], err


def test_a_busy_port_is_a_one_line_error(capsys):
    pytest.importorskip("gradio", reason="needs the demo extra's gradio")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["demo", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"fer-jax demo: error: cannot serve on 127.0.0.1:{port}"), err


@pytest.mark.parametrize(("model", "detector"), [("vgg_bn", DEFAULT_DETECTOR), ("seed_cnn", "dlib")])
def test_a_photo_gets_predicts_faces_and_an_annotated_image(tmp_path, model, detector):
    path = write_bgr(tmp_path / "astronaut.jpg", skimage.data.astronaut())
    result = photo_result(path, "astronaut.jpg", str(shipped_weights(model)), detector)
    expected = fer_jax.predict(path, shipped_weights(model), detector=detector)
    assert [(f.box, f.probabilities) for f in result.faces] == [(f.box, f.probabilities) for f in expected]
    assert result.message == f"astronaut.jpg: 1 face: 1. happy {expected[0].probability:.2f}"
    assert result.image.shape == (512, 512, 3)
    box = expected[0].box  # the box is drawn in green on the image's copy
    assert tuple(result.image[box[1] + box[3] // 2, box[0]]) == pytest.approx((0, 220, 0), abs=40)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.jpg", b"not an image", "notes.jpg: not a readable image"),
        ("empty.jpg", b"", "empty.jpg: not a readable image"),
        ("gray.png", None, "gray.png: No face found."),
    ],
)
def test_bad_photos_give_a_message_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        assert cv2.imwrite(str(path), np.full((300, 400, 3), 128, np.uint8))
    else:
        path.write_bytes(content)
    result = photo_result(path, name, DEFAULT, DEFAULT_DETECTOR)
    assert result.message == message and result.faces == []
    assert str(tmp_path) not in result.message  # the server's folders stay out of the page


def test_large_images_are_shown_scaled_down():
    shown = for_display(np.zeros((2 * DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE, 3), np.uint8))
    assert shown.shape == (DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE // 2, 3)
    assert for_display(np.zeros((48, 64, 3), np.uint8)).shape == (48, 64, 3)


def test_each_shown_image_is_a_complete_file_of_its_own(tmp_path):
    image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    files = DisplayFiles(tmp_path)
    first, second = files.write(image), files.write(image)  # the same result twice: two files, not one rewritten
    assert first != second
    assert all(cv2.imread(path).shape == image.shape for path in (first, second))


def test_a_video_gets_predict_videos_files_and_a_browser_copy(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", skimage.data.astronaut(), frames=4)
    result = video_result(clip, DEFAULT, DEFAULT_DETECTOR, 1, tmp_path / "out")
    annotated, table = result.files
    assert (annotated.name, table.name) == ("clip_annotated.mp4", "clip_frames.csv")
    with table.open(newline="") as handle:
        assert [result.header, *result.rows] == list(csv.reader(handle))
    assert [row[result.header.index("emotion")] for row in result.rows] == ["happy"] * 4
    assert result.message == "clip.mp4: 4 frames, 4 classified, 4 with a face"
    copy = cv2.VideoCapture(str(result.playable))
    assert result.playable.suffix == ".webm" and copy.get(cv2.CAP_PROP_FRAME_COUNT) == 4
    assert int(copy.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little") == b"VP80"


def test_bad_and_long_videos_give_a_message(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    assert video_result(bad, DEFAULT, DEFAULT_DETECTOR, 1, tmp_path).message == "bad.mp4: not a readable video"
    long = write_clip(tmp_path / "long.mp4", np.zeros((32, 32, 3), np.uint8), VIDEO_MAX_SECONDS + 2, fps=1.0)
    result = video_result(long, DEFAULT, DEFAULT_DETECTOR, 1, tmp_path)
    assert result.files == [] and f"up to {VIDEO_MAX_SECONDS} s" in result.message


def test_the_webcam_meter_counts_frames_and_faces_over_its_window():
    meter = Meter()
    assert meter.rates() == (0.0, 0.0)
    for step in range(5):
        meter.add(2, 100.0 + 0.1 * step)
    assert meter.rates() == pytest.approx((10.0, 20.0))
    meter.add(1, 110.0)  # the earlier frames fall out of the window
    assert len(meter.frames) == 1 and meter.rates() == (0.0, 0.0)


def test_the_model_menu_offers_the_shipped_nets_then_the_given_checkpoints(tmp_path):
    choices = model_choices([DEFAULT_WEIGHTS.parent / "seed_cnn.msgpack", tmp_path])
    assert list(choices) == [
        "vgg_bn (shipped, default)",
        "seed_cnn (shipped)",
        f"{DEFAULT_WEIGHTS.parent / 'seed_cnn.msgpack'} (weights)",
        f"{tmp_path} (run folder)",
    ]
    with pytest.raises(DataError, match="no such file or folder"):
        model_choices([tmp_path / "missing"])


# In a real browser ---------------------------------------------------------------------------------------------

MAX_FILE_SIZE = "2mb"
browser = pytest.mark.skipif(bool(browser_missing()), reason=browser_missing() or "-")


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Iterator[Page]:
    """The page of a `fer-jax demo` server (upload limit MAX_FILE_SIZE), its fake camera streaming the astronaut."""
    folder = tmp_path_factory.mktemp("demo")
    with demo_server(folder / "server.log", ["--max-file-size", MAX_FILE_SIZE]) as (url, _):
        opened = Page(url, write_y4m(folder / "astronaut.y4m", skimage.data.astronaut()))
        try:
            yield opened
        finally:
            opened.close()


def listed_faces(message: str) -> list[tuple[str, str]]:
    """(emotion, probability) of each face in a message line such as 'a.jpg: 2 faces: 1. happy 0.88, 2. sad 0.41'."""
    return re.findall(r"\d+\. (\w+) (\d\.\d\d)", message)


@pytest.mark.slow
@browser
def test_the_page_shows_predicts_faces_for_a_photo(page, tmp_path):
    photo = write_bgr(tmp_path / "pair.jpg", two_faces())
    out = tmp_path / "predicted"
    subprocess.run([sys.executable, "-m", "fer_jax", "predict", str(photo), "--out", str(out)], check=True, cwd=ROOT)
    expected = json.loads((out / "predictions.json").read_text())["images"][0]["faces"]
    assert len(expected) == 2
    page.tab("Photo")
    page.upload("photo-input", photo)
    message = page.message("photo-message", "pair.jpg:")
    assert listed_faces(message) == [(face["emotion"], f"{face['probability']:.2f}") for face in expected]
    assert page.shown_image("photo-output") == (two_faces().shape[1], 512)
    charts = [label.text for label in page.find("[data-testid='block-label']") if label.text.startswith("Face ")]
    assert charts[: len(expected)] == [
        f"Face {n}: {f['emotion']} {f['probability']:.2f}" for n, f in enumerate(expected, 1)
    ]
    if shot := os.environ.get("FER_JAX_DEMO_SCREENSHOT"):  # docs/demo.jpg: FER_JAX_DEMO_SCREENSHOT=docs/demo.jpg
        png = np.frombuffer(page.driver.get_screenshot_as_png(), np.uint8)
        assert cv2.imwrite(shot, cv2.imdecode(png, cv2.IMREAD_COLOR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert page.outside_requests() == []


@pytest.mark.slow
@browser
def test_bad_files_show_a_message_and_the_server_keeps_serving(page, tmp_path):
    (tmp_path / "notes.jpg").write_text("a text file named .jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "large.jpg").write_bytes(os.urandom(3_000_000))  # over the server's --max-file-size 2mb
    assert cv2.imwrite(str(tmp_path / "huge.png"), np.full((10_000, 10_000, 3), 200, np.uint8))
    write_bgr(tmp_path / "coffee.jpg", skimage.data.coffee())
    write_bgr(tmp_path / "astronaut.jpg", skimage.data.astronaut())
    page.tab("Photo")
    for name, shown in (
        ("notes.jpg", "notes.jpg: not a readable image"),
        ("empty.jpg", "empty.jpg: not a readable image"),
        ("huge.png", "huge.png: No face found."),
        ("coffee.jpg", "coffee.jpg: No face found."),
    ):
        page.upload("photo-input", tmp_path / name)
        assert page.message("photo-message", f"{name}:") == shown
    page.upload("photo-input", tmp_path / "notes.txt")
    assert "Invalid file type" in str(page.wait(page.toasts, "the page to refuse a .txt file"))
    page.upload("photo-input", tmp_path / "large.jpg")
    assert "exceed the maximum allowed size" in str(page.wait(page.toasts, "the page to refuse a 3 MB file"))
    page.upload("photo-input", tmp_path / "astronaut.jpg")
    assert listed_faces(page.message("photo-message", "astronaut.jpg:"))[0][0] == "happy"


@pytest.mark.slow
@browser
def test_the_page_classifies_a_short_video_and_refuses_a_broken_one(page, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", skimage.data.astronaut(), frames=5)
    (tmp_path / "broken.mp4").write_text("not a video")
    page.tab("Video")
    page.upload("video-input", clip)
    page.wait(lambda: page.find("#video-input video"), "the uploaded video")
    page.find("#video-run")[0].click()
    assert page.message("video-message", "clip.mp4:") == "clip.mp4: 5 frames, 5 classified, 5 with a face"
    video = page.wait(lambda: page.find("#video-output video"), "the annotated video")[0]
    playable = "return arguments[0].readyState >= 2 ? arguments[0].videoWidth : 0"
    assert page.wait(lambda: page.driver.execute_script(playable, video), "the annotated video to play") == 512
    files = page.text("video-files").replace("\n", "")  # the page breaks a name before its suffix
    assert "clip_annotated.mp4" in files and "clip_frames.csv" in files
    page.upload("video-input", tmp_path / "broken.mp4")
    time.sleep(1)
    page.find("#video-run")[0].click()
    assert page.message("video-message", "broken.mp4:") == "broken.mp4: not a readable video"
    assert page.outside_requests() == []


@pytest.mark.slow
@browser
def test_the_webcam_streams_boxes_and_emotions(page):
    page.start_webcam()
    try:

        def measured() -> str:  # the first frame has no rate yet
            line = page.text("webcam-message")
            return line if "1 face: 1. happy" in line and float(line.split(" faces/s")[0]) > 0 else ""

        page.wait(measured, "a happy face and a measured faces/s")
        assert page.wait(lambda: page.shown_image("webcam-output")[0], "the annotated frame") == 640
    finally:
        page.stop_webcam()
    assert page.outside_requests() == []
