"""`fer-jax demo`: the model in a browser (a Gradio app): photos, the webcam and short videos.

Every result comes from `fer_jax.infer.predict`, the code behind `fer-jax predict` and
`fer_jax.predict`: a photo is read by `read_image` (as the command line reads a file), its faces found
and classified by `classify` and drawn by `annotate`; a video goes through `predict_video`, which writes
the annotated video and the per-frame CSV that `fer-jax predict --video` writes. This module only turns
those results into the page's outputs, and bad input into a message in the page.

The app serves on 127.0.0.1 unless told otherwise, with Gradio's telemetry off and no share link; the
page loads nothing from outside the server. All model work runs in one Gradio queue, one request at a
time (`CONCURRENCY`): requests beyond the CPU's capacity wait their turn instead of competing for it.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import ipaddress
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from fer_jax.data.labels import EMOTIONS
from fer_jax.errors import DataError
from fer_jax.infer.detect import DEFAULT_DETECTOR, DETECTORS
from fer_jax.infer.predict import (
    ANNOTATE_MIN_SIDE,
    DEFAULT_WEIGHTS,
    WEIGHTS_DIR,
    Face,
    annotate,
    classifier_of,
    classify,
    decoder_messages,
    load_classifier,
    one_line,
    predict_video,
    read_image,
    to_bgr,
)

GRADIO_VERSION = "6.31.0"
"""The Gradio the demo was built and tested with (the `demo` extra pins it)."""
DEFAULT_MAX_FILE_SIZE = "50mb"
"""Largest upload the server accepts (`--max-file-size`)."""
CONCURRENCY = 1
"""Requests the model works on at once. JAX and ONNX Runtime already spread one request over the CPU's cores,
and `read_image` redirects file descriptor 2 while it decodes, which concurrent requests would interleave."""
QUEUE_SIZE = 64
"""Requests that may wait in the queue; beyond that a request is told the queue is full."""
DISPLAY_MAX_SIDE = 1600
"""Annotated images are scaled down to this for the page (a 10,000 px photo is classified at full size)."""
MAX_FACE_CHARTS = 6
"""Faces of a photo that get their own probability chart (the table lists all of them)."""
VIDEO_MAX_SECONDS = 60
"""Longest video the page accepts: it holds the queue while it runs."""
WEBCAM_INTERVAL_S = 0.05
"""How often the page sends a webcam frame (at most 20 frames/s; the server takes them as fast as it can)."""
METER_WINDOW_S = 3.0
"""The webcam's frames/s and faces/s are measured over the frames of this last span."""
IMAGE_TYPES = ["image"]
VIDEO_TYPES = ["video"]


def is_loopback(host: str) -> bool:
    """Whether serving on `host` keeps the demo on this machine (localhost, 127.0.0.0/8, ::1)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_gradio() -> Any:
    """Gradio, imported with its telemetry off; a one-line DataError saying how to install it if it is missing."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        raise DataError(f"fer-jax demo needs Gradio: pip install 'fer-jax[demo]' (gradio=={GRADIO_VERSION})") from None
    return gradio


# Models -------------------------------------------------------------------------------------------------------


def model_choices(checkpoints: Sequence[str | Path] = ()) -> dict[str, str]:
    """The page's model menu: label -> what `load_classifier` takes. The shipped nets (the default first), then each
    checkpoint (exported weights or a run folder) given on the command line."""
    shipped = sorted(WEIGHTS_DIR.glob("*.msgpack"), key=lambda path: (path != DEFAULT_WEIGHTS, path.stem))
    choices = {f"{path.stem} (shipped{', default' if path == DEFAULT_WEIGHTS else ''})": str(path) for path in shipped}
    for checkpoint in checkpoints:
        path = Path(checkpoint)
        if not path.exists():
            raise DataError(f"{path}: no such file or folder (--checkpoint takes exported weights or a run folder)")
        choices[f"{path} ({'run folder' if path.is_dir() else 'weights'})"] = str(path)
    return choices


def example_images() -> list[Path]:
    """Photos that ship inside installed packages, for the page's examples: scikit-image's astronaut (if installed),
    matplotlib's Grace Hopper, and Gradio's lion (no face)."""
    candidates = []
    for package, relative in (
        ("skimage", "data/astronaut.png"),
        ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
        ("gradio", "media_assets/images/lion.jpg"),
    ):
        spec = importlib.util.find_spec(package)
        if spec and spec.origin:
            candidates.append(Path(spec.origin).parent / relative)
    return [path for path in candidates if path.is_file()]


# Results ------------------------------------------------------------------------------------------------------


def for_display(bgr: Any) -> Any:
    """An annotated BGR image as the page shows it: scaled down to DISPLAY_MAX_SIDE at most."""
    scale = DISPLAY_MAX_SIDE / max(bgr.shape[:2])
    if scale < 1:
        size = (max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    return bgr


class DisplayFiles:
    """Annotated images as JPEG files for the page, each under a name of its own.

    Gradio writes an image returned as an array to a file named by its content, in place: a second request with the
    same result rewrites the file while the first one's page may still be downloading it (a truncated image under
    load). A file of our own, complete before Gradio copies it, avoids that. Files older than KEEP_S (Gradio has
    copied them long before) are removed as new ones come.
    """

    KEEP_S = 60.0

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.swept = time.monotonic()

    def write(self, bgr: Any) -> str:
        now = time.time()
        if time.monotonic() - self.swept > self.KEEP_S:
            for old in self.folder.glob("*.jpg"):
                with contextlib.suppress(OSError):
                    if now - old.stat().st_mtime > self.KEEP_S:
                        old.unlink()
            self.swept = time.monotonic()
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise DataError("OpenCV could not encode the annotated image")
        handle, path = tempfile.mkstemp(suffix=".jpg", dir=self.folder)
        with os.fdopen(handle, "wb") as out:
            out.write(encoded.tobytes())
        return path


def describe_faces(faces: Sequence[Face]) -> str:
    """One line: how many faces, and each one's emotion and probability, left to right."""
    if not faces:
        return "No face found."
    listed = ", ".join(f"{number}. {face.emotion} {face.probability:.2f}" for number, face in enumerate(faces, 1))
    return f"{len(faces)} face{'s' if len(faces) > 1 else ''}: {listed}"


def face_table(faces: Sequence[Face]) -> list[list[Any]]:
    """Per face: number, box, emotion and the seven probabilities (the columns of `FACE_COLUMNS`)."""
    return [
        [number, *face.box, face.emotion, *(round(face.probabilities[e], 4) for e in EMOTIONS)]
        for number, face in enumerate(faces, 1)
    ]


FACE_COLUMNS = ["face", "x", "y", "width", "height", "emotion", *EMOTIONS]


@dataclass
class PhotoResult:
    """What the photo tab shows: the annotated image (BGR, None after an error), the faces, and a message."""

    image: Any
    faces: list[Face]
    message: str


def photo_result(path: str | Path, name: str, checkpoint: str, detector: str) -> PhotoResult:
    """Find and classify the faces of the image file at `path` (shown to the user as `name`), as
    `fer-jax predict` does; an unreadable file or a failing image gives a message, not an exception."""
    try:
        bgr = read_image(path)
        faces = classify(bgr, classifier_of(checkpoint), detector=detector)
        image = annotate(bgr, faces, ANNOTATE_MIN_SIDE)
    except DataError as err:
        return PhotoResult(None, [], one_line(err).replace(str(path), name))
    except (cv2.error, MemoryError) as err:
        return PhotoResult(None, [], f"{name}: could not be processed ({one_line(err)})")
    return PhotoResult(for_display(image), faces, f"{name}: {describe_faces(faces)}")


@dataclass
class Meter:
    """Frames and faces the webcam stream classified over the last METER_WINDOW_S seconds."""

    frames: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, faces: int, now: float) -> None:
        self.frames.append((now, faces))
        while self.frames and now - self.frames[0][0] > METER_WINDOW_S:
            self.frames.popleft()

    def rates(self) -> tuple[float, float]:
        """(frames/s, faces/s) over the window; zeros until two frames are in it."""
        if len(self.frames) < 2:
            return 0.0, 0.0
        span = self.frames[-1][0] - self.frames[0][0]
        if span <= 0:
            return 0.0, 0.0
        return (len(self.frames) - 1) / span, sum(faces for _, faces in list(self.frames)[1:]) / span


def webcam_frame(rgb: Any, checkpoint: str, detector: str, meter: Meter) -> tuple[Any, str]:
    """One webcam frame annotated (BGR), and a line with the measured frames/s and faces/s and the faces."""
    start = time.perf_counter()
    bgr = to_bgr(rgb)
    faces = classify(bgr, classifier_of(checkpoint), detector=detector)
    annotated = for_display(annotate(bgr, faces))
    meter.add(len(faces), time.perf_counter())
    frames_per_s, faces_per_s = meter.rates()
    took_ms = 1000 * (time.perf_counter() - start)
    return annotated, (
        f"{faces_per_s:.1f} faces/s, {frames_per_s:.1f} frames/s (last {METER_WINDOW_S:.0f} s); "
        f"{took_ms:.0f} ms for this frame. {describe_faces(faces)}"
    )


@dataclass
class VideoResult:
    """What the video tab shows: a browser-playable copy of the annotated video, the files `fer-jax predict --video`
    writes (annotated .mp4 and per-frame .csv), the CSV's rows, and a message."""

    playable: Path | None
    files: list[Path]
    header: list[str]
    rows: list[list[str]]
    message: str


def video_result(path: str | Path, checkpoint: str, detector: str, every: int, out_dir: Path) -> VideoResult:
    """Run `predict_video` on the video at `path` into `out_dir`; an unreadable or too long video gives a message."""
    path = Path(path)
    try:
        seconds = video_seconds(path)
        if seconds > VIDEO_MAX_SECONDS:
            raise DataError(f"{path.name}: {seconds:.0f} s long; the demo takes videos up to {VIDEO_MAX_SECONDS} s")
        summary = predict_video(path, out_dir, classifier_of(checkpoint), every=every, detector=detector)
    except DataError as err:
        return VideoResult(None, [], [], [], one_line(err).replace(str(path), path.name))
    except (cv2.error, MemoryError) as err:
        return VideoResult(None, [], [], [], f"{path.name}: could not be processed ({one_line(err)})")
    annotated, table = Path(summary["annotated"]), Path(summary["csv"])
    with table.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    return VideoResult(
        browser_copy(annotated),
        [annotated, table],
        header,
        rows,
        f"{path.name}: {summary['frames']} frames, {summary['classified_frames']} classified, "
        f"{summary['frames_with_faces']} with a face",
    )


def video_seconds(path: Path) -> float:
    """The length of a video file in seconds (0 when its container does not say); DataError if unreadable."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened() or not capture.read()[0]:
            raise DataError(f"{path}: not a readable video")
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        return max(0.0, capture.get(cv2.CAP_PROP_FRAME_COUNT)) / fps
    finally:
        capture.release()


def browser_copy(video: Path) -> Path:
    """A VP8 WebM copy of `video` beside it: browsers do not play the MPEG-4 Part 2 video OpenCV writes, and
    OpenCV's wheel has no H.264 encoder."""
    out = video.with_suffix(".webm")
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    with decoder_messages():  # OpenCV's note that it maps the 'VP80' tag itself
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"VP80"), fps, size)
    try:
        ok, frame = capture.read()
        while ok:
            writer.write(frame)
            ok, frame = capture.read()
    finally:
        writer.release()
        capture.release()
    return out


# The page -----------------------------------------------------------------------------------------------------


def build_app(checkpoints: Sequence[str | Path] = (), work_dir: str | Path | None = None) -> Any:
    """The Gradio Blocks of the demo (not launched). `work_dir` holds the annotated images and videos it hands to
    Gradio (default: a new temporary folder)."""
    gr = require_gradio()
    models = model_choices(checkpoints)
    default_model = next(iter(models)) if not checkpoints else list(models)[-len(checkpoints)]
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="fer-jax-demo-"))
    display = DisplayFiles(work_dir)
    queue = {"concurrency_limit": CONCURRENCY, "concurrency_id": "model"}

    def controls() -> tuple[Any, Any]:
        with gr.Row():
            model = gr.Dropdown(list(models), value=default_model, label="Model")
            detector = gr.Dropdown(
                list(DETECTORS),
                value=DEFAULT_DETECTOR,
                label="Face detector",
                info="retinaface: the default of fer-jax predict; -sweep: also turned and small faces, several "
                "times slower (docs/predict.md)",
            )
        return model, detector

    def on_photo(payload: dict[str, Any] | None, model: str, detector: str) -> tuple[Any, ...]:
        # preprocess=False: the upload reaches fer-jax's reader unopened (Gradio's would reject a bad file with
        # an exception of its own), as a path inside Gradio's upload folder.
        no_charts = [gr.update(visible=False, value=None)] * MAX_FACE_CHARTS
        if not payload or not payload.get("path"):
            return None, "", [], *no_charts
        if model not in models:  # unvalidated too: a client of the API may send anything
            return None, f"unknown model {model!r}: choose one of {', '.join(models)}", [], *no_charts
        path = payload["path"]
        result = photo_result(path, payload.get("orig_name") or Path(path).name, models[model], detector)
        charts = [
            gr.update(
                visible=True,
                value=face.probabilities,
                label=f"Face {number}: {face.emotion} {face.probability:.2f}",
            )
            for number, face in enumerate(result.faces[:MAX_FACE_CHARTS], 1)
        ]
        charts += no_charts[len(charts) :]
        image = None if result.image is None else display.write(result.image)
        return image, result.message, face_table(result.faces), *charts

    def on_webcam(rgb: Any, model: str, detector: str, meter: Meter | None) -> tuple[Any, str, Meter]:
        meter = meter or Meter()
        if rgb is None:
            return None, "", meter
        image, line = webcam_frame(rgb, models[model], detector, meter)
        return display.write(image), line, meter

    def on_video(path: str | None, model: str, detector: str, every: int) -> tuple[Any, ...]:
        if not path:
            return None, None, gr.update(value=None), "Upload a video first."
        result = video_result(path, models[model], detector, int(every), Path(tempfile.mkdtemp(dir=work_dir)))
        table = gr.update(value=result.rows, headers=result.header) if result.rows else gr.update(value=None)
        return result.playable, [str(p) for p in result.files] or None, table, result.message

    with gr.Blocks(title="fer-jax demo", delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            "# fer-jax: facial expressions\nFaces found by the detector, each classified into the seven FER-2013 "
            "emotions by the model (`fer-jax predict` in a page)."
        )
        with gr.Tab("Photo"):
            model, detector = controls()
            with gr.Row():
                photo = gr.Image(
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    label="Photo (upload or paste)",
                    elem_id="photo-input",
                )
                annotated = gr.Image(label="Faces", interactive=False, elem_id="photo-output")
            photo_message = gr.Markdown(elem_id="photo-message")
            charts = []
            with gr.Row():
                for number in range(1, MAX_FACE_CHARTS + 1):
                    charts.append(
                        gr.Label(num_top_classes=len(EMOTIONS), label=f"Face {number}", visible=False, min_width=200)
                    )
            faces = gr.Dataframe(headers=FACE_COLUMNS, label="Faces: box and seven probabilities", interactive=False)
            examples = example_images()
            if examples:
                gr.Examples([[str(path)] for path in examples], inputs=[photo], label="Examples")
            gr.on(
                [photo.change, model.change, detector.change],
                on_photo,
                inputs=[photo, model, detector],
                outputs=[annotated, photo_message, faces, *charts],
                preprocess=False,
                api_name="photo",
                **queue,
            )
        with gr.Tab("Webcam"):
            live_model, live_detector = controls()
            meter = gr.State(None)
            with gr.Row():
                webcam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam", elem_id="webcam")
                live = gr.Image(label="Faces, live", interactive=False, elem_id="webcam-output")
            live_message = gr.Markdown(elem_id="webcam-message")
            webcam.stream(
                on_webcam,
                inputs=[webcam, live_model, live_detector, meter],
                outputs=[live, live_message, meter],
                stream_every=WEBCAM_INTERVAL_S,
                show_progress="hidden",
                api_name="webcam",
                **queue,
            )
        with gr.Tab("Video"):
            video_model, video_detector = controls()
            with gr.Row():
                video = gr.Video(
                    sources=["upload"], format=None, label=f"Video (up to {VIDEO_MAX_SECONDS} s)", elem_id="video-input"
                )
                video_out = gr.Video(label="Faces", interactive=False, elem_id="video-output")
            every = gr.Slider(1, 30, value=1, step=1, label="Classify every N-th frame")
            run = gr.Button("Classify the video", variant="primary", elem_id="video-run")
            video_message = gr.Markdown(elem_id="video-message")
            files = gr.File(
                label="predict --video's files: annotated .mp4, per-frame .csv",
                file_count="multiple",
                elem_id="video-files",
            )
            frames = gr.Dataframe(label="Per-frame CSV", interactive=False, max_height=300)
            run.click(
                on_video,
                inputs=[video, video_model, video_detector, every],
                outputs=[video_out, files, frames, video_message],
                api_name="video",
                **queue,
            )
    app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    return app


def warm_up(checkpoint: str | Path | None = None, detector: str = DEFAULT_DETECTOR) -> None:
    """Load the default model and detector and compile the classifier on an example photo, so that the first
    request does not wait for it."""
    examples = example_images()
    if examples:
        photo_result(examples[0], examples[0].name, str(checkpoint or DEFAULT_WEIGHTS), detector)


def serve(
    host: str = "127.0.0.1",
    port: int = 7860,
    checkpoints: Sequence[str | Path] = (),
    max_file_size: str = DEFAULT_MAX_FILE_SIZE,
) -> None:
    """Build the app, warm the model, and serve it until interrupted."""
    gr = require_gradio()
    if not is_loopback(host):
        print(
            f"warning: --host {host} opens the demo to every machine that can reach this one: anyone there can "
            "upload files to it and use its CPU",
            file=sys.stderr,
        )
    with tempfile.TemporaryDirectory(prefix="fer-jax-demo-") as work_dir:
        app = build_app(checkpoints, work_dir)
        for checkpoint in checkpoints:  # a broken one stops the command here, in one line, not later in the page
            load_classifier(str(checkpoint))
        warm_up(checkpoints[0] if checkpoints else None)
        try:
            app.launch(
                server_name=host,
                server_port=port,
                share=False,
                max_file_size=max_file_size,
                allowed_paths=[str(path) for path in example_images()],
                theme=gr.themes.Default(),
                ssr_mode=False,
                mcp_server=False,
                pwa=False,
                enable_monitoring=False,
                show_error=True,
                quiet=True,
                prevent_thread_lock=True,
            )
        except OSError as err:
            raise DataError(f"cannot serve on {host}:{port} ({one_line(err)})") from None
        print(f"fer-jax demo: serving on {app.local_url} (Ctrl-C stops it)", flush=True)
        try:
            app.block_thread()
        finally:
            app.close()
