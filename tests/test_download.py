"""utils.data.download / download_file against a local HTTP server only (never the internet)."""
from __future__ import annotations

import hashlib
import http.server
import threading
import time

import pytest

from utils import data
from utils.data import DownloadError, RemoteFile, download, download_file

BODY = b"course data " * 1000
SHA = "sha256:" + hashlib.sha256(BODY).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        if self.path == "/ok":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/truncated":  # promises the whole body, sends half, hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[: len(BODY) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif self.path == "/slow":
            time.sleep(2)
            self.send_response(200)
            self.end_headers()
        else:
            self.send_error(500, "boom")


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DL_COURSE_CACHE", str(tmp_path))
    monkeypatch.delenv("DL_COURSE_ALLOW_DOWNLOAD", raising=False)


def leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_download_file_ok(server, tmp_path):
    dest = download_file(f"{server}/ok", SHA, tmp_path / "sub" / "f.bin", timeout=5)
    assert dest.read_bytes() == BODY
    assert leftovers(tmp_path) == ["f.bin"]


def test_md5_checksums_are_supported(server, tmp_path):
    md5 = "md5:" + hashlib.md5(BODY).hexdigest()
    assert download_file(f"{server}/ok", md5, tmp_path / "f.bin", timeout=5).read_bytes() == BODY


@pytest.mark.parametrize("path,checksum,match", [
    ("/ok", "sha256:" + "0" * 64, "checksum mismatch"),
    ("/truncated", SHA, "truncated download"),
    ("/slow", SHA, "within 0.5s"),
    ("/missing", SHA, "server answered 500"),
])
def test_download_file_failures_leave_no_file(server, tmp_path, path, checksum, match):
    with pytest.raises(DownloadError, match=match):
        download_file(f"{server}{path}", checksum, tmp_path / "f.bin", timeout=0.5)
    assert leftovers(tmp_path) == [], "a failed download must not leave a partial file"


def test_bad_checksum_format_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="sha256:<hex>"):
        download_file("http://127.0.0.1:9/x", "deadbeef", tmp_path / "f")


@pytest.fixture
def fake_dataset(server, monkeypatch):
    monkeypatch.setitem(data.DATASETS, "fake", [RemoteFile(f"{server}/ok", SHA, "fake/f.bin")])


def test_download_refuses_without_opt_in(fake_dataset, tmp_path):
    with pytest.raises(DownloadError) as info:
        download("fake")
    assert "DL_COURSE_ALLOW_DOWNLOAD=1" in str(info.value) and "allow_download=True" in str(info.value)
    assert leftovers(tmp_path) == []


def test_download_with_env_opt_in_then_cached(fake_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("DL_COURSE_ALLOW_DOWNLOAD", "1")
    (path,) = download("fake")
    assert path == tmp_path / "fake" / "f.bin" and path.read_bytes() == BODY
    monkeypatch.delenv("DL_COURSE_ALLOW_DOWNLOAD")
    assert download("fake") == [path], "a verified cached file needs no opt-in"


def test_download_with_argument_opt_in(fake_dataset):
    (path,) = download("fake", allow_download=True)
    assert path.read_bytes() == BODY


def test_corrupt_cached_file_is_not_trusted(fake_dataset, tmp_path):
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "f.bin").write_bytes(b"corrupt")
    with pytest.raises(DownloadError, match="downloads are off"):
        download("fake")


def test_unknown_dataset():
    with pytest.raises(ValueError, match="available: cifar10, fashion-mnist, mnist"):
        download("imagenet")


def test_registry_checksums_are_well_formed():
    for name, files in data.DATASETS.items():
        for f in files:
            algo, digest = f.checksum.split(":")
            assert algo in ("sha256", "md5") and len(digest) == {"sha256": 64, "md5": 32}[algo], name
            assert f.url.startswith("http") and f.filename.startswith(name)
