"""`fer-jax demo` from outside: its server in a process of its own, and its page in headless Chromium.

Shared by the browser tests (tests/test_demo.py) and the demo's benchmarks (experiments/demo_load.py,
experiments/demo_webcam.py). The browser is Debian's `chromium`, driven through Debian's `chromium-driver` by
Selenium (Playwright's own browser download cannot work offline); the webcam is Chromium's fake capture device
streaming a Y4M clip.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1500",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
)


def browser_missing() -> str:
    """Why the page cannot be driven here ('' when it can)."""
    if not (CHROMIUM and CHROMEDRIVER):
        return "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)"
    try:
        import gradio  # noqa: F401
        import selenium  # noqa: F401
    except ImportError as err:
        return f"needs the dev extra's {err.name} (pip install -e '.[dev]')"
    return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def demo_server(log_path: Path, args: Sequence[str] = (), timeout: float = 300.0) -> Iterator[tuple[str, int]]:
    """`fer-jax demo` on a free port of 127.0.0.1 (its output in `log_path`): its URL and process id, once it serves
    its page. Stopped with Ctrl-C (SIGINT) on leaving; killed if it has not stopped 30 s later (an error) or if
    the wait is interrupted."""
    port = free_port()
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "fer_jax", "demo", "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while "serving on" not in log_path.read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the demo server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
        yield url, server.pid
        if server.poll() is not None:
            raise RuntimeError(f"the demo server died:\n{log_path.read_text()[-3000:]}")
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):  # interrupted while waiting: never leave it running
                server.kill()
                server.wait()
                raise


def write_y4m(path: Path, rgb: Any, frames: int = 10) -> Path:
    """A 640x480 YUV4MPEG2 clip of an RGB photo (scaled to 480x480 on a gray canvas): what Chromium's fake camera
    streams, in a loop."""
    import cv2
    import numpy as np

    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[:, 80:560] = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (480, 480), interpolation=cv2.INTER_AREA)
    i420 = cv2.cvtColor(canvas, cv2.COLOR_BGR2YUV_I420).tobytes()
    path.write_bytes(
        b"YUV4MPEG2 W640 H480 F10:1 Ip A1:1 C420jpeg\n" + b"".join(b"FRAME\n" + i420 for _ in range(frames))
    )
    return path


class Page:
    """The demo's page in headless Chromium, and what it shows. `fake_camera`: the Y4M clip its webcam streams."""

    def __init__(self, url: str, fake_camera: Path, timeout: float = 90.0) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*CHROMIUM_FLAGS, f"--use-file-for-fake-video-capture={fake_camera}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.set_page_load_timeout(60)
        self.url, self.timeout = url, timeout
        self.driver.get(url)
        self.wait(lambda: self.find("#photo-input input[type=file]"), "the page's photo input")

    def close(self) -> None:
        self.driver.quit()

    def find(self, css: str) -> list:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, ready: Callable[[], Any], what: str, timeout: float | None = None) -> Any:
        """`ready()`'s first true value, polled; AssertionError naming `what` after `timeout` s."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            if value := ready():
                return value
            time.sleep(0.25)
        raise AssertionError(f"waited {timeout or self.timeout} s for {what}")

    def tab(self, name: str) -> None:
        next(tab for tab in self.find("button[role=tab]") if tab.text == name).click()

    def text(self, element_id: str) -> str:
        return "".join(element.text for element in self.find(f"#{element_id}"))

    def upload(self, element_id: str, path: Path) -> None:
        for clear in self.find(f"#{element_id} button[aria-label='Clear']"):
            clear.click()
        self.find(f"#{element_id} input[type=file]")[0].send_keys(str(path))

    def message(self, element_id: str, start: str) -> str:
        """The message line once it starts with `start` and no longer shows progress."""

        def ready() -> str:
            line = self.text(element_id).strip()
            return line if line.startswith(start) and "processing" not in line else ""

        return self.wait(ready, f"#{element_id} to show {start!r}")

    def toasts(self) -> str:
        return " ".join(toast.text for toast in self.find(".toast-body"))

    def shown_image(self, element_id: str) -> tuple[int, int]:
        """Natural width and height of the image an output shows ((0, 0) for none or a broken one)."""
        images = self.find(f"#{element_id} img")
        if not images:
            return 0, 0
        size = "return [arguments[0].naturalWidth, arguments[0].naturalHeight]"
        return tuple(self.driver.execute_script(size, images[0]))

    def start_webcam(self) -> None:
        """Open the webcam tab, allow the camera and start streaming its frames to the server."""
        self.tab("Webcam")
        self.wait(lambda: self.find("#webcam div[title='grant webcam access'] button"), "the webcam button")[0].click()
        self.wait(lambda: self.find("#webcam button[aria-label='capture photo']"), "the record button")[0].click()

    def stop_webcam(self) -> None:
        for button in self.find("#webcam button"):
            if button.text.strip() == "Stop":
                button.click()

    def outside_requests(self) -> list[str]:
        """Every URL the page requested since the last call that is not the server's own, data: or blob:."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return [url for url in urls if not url.startswith((self.url, "data:", "blob:"))]
