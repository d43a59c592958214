"""download_fer2013 against a fake Kaggle, mocked at the network boundary.

`requests.adapters.HTTPAdapter.send` is replaced, so the real kaggle client runs
end to end: authentication, request building, redirects (requests' own
`Session.send`), streaming the body to disk. Nothing leaves the machine.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import zipfile
from pathlib import Path

import pytest
import requests
import urllib3

from fer_jax.data.download import KAGGLE_DATASET, DownloadError, download_fer2013

# find_spec, not importorskip: importing kaggle here would authenticate with the real user's config.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("kaggle") is None, reason="needs the kaggle package")

API_URL = "https://api.kaggle.com/v1/datasets.DatasetApiService/DownloadDataset"
BLOB_URL = "https://storage.googleapis.com/kaggle-data-sets/fer2013.zip?signature=abc"
USER, KEY = "alice", "s3cret-key"


def make_zip(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"\xff\xd8\xff\xe0 tiny jpeg")
    return buffer.getvalue()


ARCHIVE = make_zip("train/happy/Training_1.jpg", "test/sad/PublicTest_2.jpg")


class FakeKaggle:
    """Plays api.kaggle.com and the storage bucket it redirects to; records every request."""

    def __init__(self) -> None:
        self.requests: list[requests.PreparedRequest] = []
        self.offline = False
        self.body = ARCHIVE

    def send(self, adapter: requests.adapters.HTTPAdapter, request: requests.PreparedRequest, **kwargs):
        self.requests.append(request)
        if self.offline:
            raise requests.exceptions.ConnectionError("Failed to resolve 'api.kaggle.com'", request=request)
        if request.url == API_URL and request.method == "POST":
            if json.loads(request.body) != {"ownerSlug": "msambare", "datasetSlug": "fer2013"}:
                return self.respond(adapter, request, 404, b"{}", {"Content-Type": "application/json"})
            expected = "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode()
            if request.headers.get("Authorization") != expected:
                body = json.dumps({"code": 401, "message": "Unauthenticated"}).encode()
                return self.respond(adapter, request, 401, body, {"Content-Type": "application/json"})
            return self.respond(adapter, request, 302, b"", {"Location": BLOB_URL})
        if request.url == BLOB_URL and request.method == "GET":
            headers = {"Content-Type": "application/zip", "Content-Length": str(len(self.body))}
            return self.respond(adapter, request, 200, self.body, headers)
        return self.respond(adapter, request, 404, b"not found", {"Content-Type": "text/plain"})

    @staticmethod
    def respond(adapter, request, status: int, body: bytes, headers: dict[str, str]) -> requests.Response:
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(body), headers=headers, status=status, preload_content=False, request_url=request.url
        )
        return adapter.build_response(request, raw)  # what the real adapter does with a socket's reply

    def api_calls(self) -> list[requests.PreparedRequest]:
        return [r for r in self.requests if r.url == API_URL]


@pytest.fixture
def kaggle_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME and KAGGLE_CONFIG_DIR and no KAGGLE_* variables: the real user's config is never read."""
    for name in list(os.environ):
        if name.startswith("KAGGLE_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    home = tmp_path / "home"
    config_dir = tmp_path / "kaggle-config"
    home.mkdir()
    config_dir.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config_dir))
    return config_dir


@pytest.fixture
def fake_kaggle(monkeypatch: pytest.MonkeyPatch) -> FakeKaggle:
    server = FakeKaggle()
    monkeypatch.setattr(
        requests.adapters.HTTPAdapter, "send", lambda self, request, **kw: server.send(self, request, **kw)
    )
    return server


def write_kaggle_json(folder: Path, username: str = USER, key: str = KEY) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kaggle.json"
    path.write_text(json.dumps({"username": username, "key": key}))
    path.chmod(0o600)


def use_env_credentials(monkeypatch: pytest.MonkeyPatch, username: str = USER, key: str = KEY) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", username)
    monkeypatch.setenv("KAGGLE_KEY", key)


@pytest.mark.parametrize("source", ["env", "KAGGLE_CONFIG_DIR", "HOME"])
def test_downloads_the_archive_atomically(source, kaggle_env, fake_kaggle, tmp_path, monkeypatch):
    if source == "env":
        use_env_credentials(monkeypatch)
    elif source == "KAGGLE_CONFIG_DIR":
        write_kaggle_json(kaggle_env)
    else:
        monkeypatch.delenv("KAGGLE_CONFIG_DIR")
        write_kaggle_json(tmp_path / "home" / ".kaggle")
    dest = tmp_path / "data"

    path = download_fer2013(dest)

    assert path == dest / "fer2013.zip"
    assert zipfile.is_zipfile(path)
    assert path.read_bytes() == ARCHIVE
    assert sorted(p.name for p in dest.iterdir()) == ["fer2013.zip"]  # no temp folder, no resume marker
    (call,) = fake_kaggle.api_calls()  # kaggle 2.x names the dataset in the POST body, not the URL
    assert KAGGLE_DATASET == "msambare/fer2013"
    assert json.loads(call.body) == {"ownerSlug": "msambare", "datasetSlug": "fer2013"}
    assert [r.url for r in fake_kaggle.requests] == [API_URL, BLOB_URL]


def test_missing_credentials_name_both_ways_and_make_no_request(kaggle_env, fake_kaggle, tmp_path):
    dest = tmp_path / "data"
    with pytest.raises(DownloadError) as error:
        download_fer2013(dest)
    message = str(error.value)
    assert "\n" not in message
    assert "credentials not found" in message
    assert "kaggle.json" in message and "KAGGLE_USERNAME" in message and "KAGGLE_KEY" in message
    assert fake_kaggle.requests == []
    assert not (dest / "fer2013.zip").exists()


@pytest.mark.parametrize("source", ["env", "KAGGLE_CONFIG_DIR"])
def test_rejected_credentials_leave_nothing_behind(source, kaggle_env, fake_kaggle, tmp_path, monkeypatch):
    if source == "env":
        use_env_credentials(monkeypatch, key="wrong-key")
    else:
        write_kaggle_json(kaggle_env, key="wrong-key")
    dest = tmp_path / "data"

    with pytest.raises(DownloadError) as error:
        download_fer2013(dest)

    message = str(error.value)
    assert "\n" not in message
    assert "rejected" in message and "401" in message
    assert "kaggle.json" in message and "KAGGLE_USERNAME" in message
    assert len(fake_kaggle.api_calls()) == 1
    assert list(dest.iterdir()) == []  # neither fer2013.zip nor a temp folder


def test_existing_archive_is_reused_unless_forced(kaggle_env, fake_kaggle, tmp_path, monkeypatch, capsys):
    dest = tmp_path / "data"
    dest.mkdir()
    old = make_zip("train/angry/Training_0.jpg")
    (dest / "fer2013.zip").write_bytes(old)

    assert download_fer2013(dest) == dest / "fer2013.zip"  # no credentials needed: nothing is fetched
    assert fake_kaggle.requests == []
    assert (dest / "fer2013.zip").read_bytes() == old
    assert "already exists" in capsys.readouterr().out

    use_env_credentials(monkeypatch)
    assert download_fer2013(dest, force=True) == dest / "fer2013.zip"
    assert len(fake_kaggle.api_calls()) == 1
    assert (dest / "fer2013.zip").read_bytes() == ARCHIVE
    assert sorted(p.name for p in dest.iterdir()) == ["fer2013.zip"]


def test_connection_error_is_one_line_and_keeps_the_old_archive(kaggle_env, fake_kaggle, tmp_path, monkeypatch):
    use_env_credentials(monkeypatch)
    fake_kaggle.offline = True
    dest = tmp_path / "data"
    dest.mkdir()
    old = make_zip("train/angry/Training_0.jpg")
    (dest / "fer2013.zip").write_bytes(old)

    with pytest.raises(DownloadError) as error:
        download_fer2013(dest, force=True)

    message = str(error.value)
    assert "\n" not in message
    assert "could not be reached" in message and "--data PATH" in message
    assert len(fake_kaggle.requests) == 1
    assert (dest / "fer2013.zip").read_bytes() == old  # a failed re-download never clobbers the archive
    assert sorted(p.name for p in dest.iterdir()) == ["fer2013.zip"]


def test_a_body_that_is_not_a_zip_never_replaces_the_archive(kaggle_env, fake_kaggle, tmp_path, monkeypatch):
    use_env_credentials(monkeypatch)
    fake_kaggle.body = b"<html>please sign in</html>"
    dest = tmp_path / "data"
    dest.mkdir()
    old = make_zip("train/angry/Training_0.jpg")
    (dest / "fer2013.zip").write_bytes(old)

    with pytest.raises(DownloadError, match="zip") as error:
        download_fer2013(dest, force=True)

    assert "\n" not in str(error.value)
    assert [r.url for r in fake_kaggle.requests] == [API_URL, BLOB_URL]  # the body was fetched, then refused
    assert (dest / "fer2013.zip").read_bytes() == old
    assert sorted(p.name for p in dest.iterdir()) == ["fer2013.zip"]
