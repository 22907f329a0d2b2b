"""Fetch against a real HTTP server on 127.0.0.1: retries with backoff, caps, clear reasons."""

import http.server
import threading

import pytest

from longvid.annotators.base import ItemFailed
from longvid.annotators.fetch import Fetch, FetchConfig

PAYLOAD = b"\x00\x00\x00\x18ftypmp42" + b"x" * 5000


class Flaky(http.server.BaseHTTPRequestHandler):
    hits: dict = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        n = Flaky.hits[self.path] = Flaky.hits.get(self.path, 0) + 1
        if self.path == "/flaky" and n <= 2:
            self.send_response(503)
            self.end_headers()
            return
        if self.path == "/forbidden":
            self.send_response(403)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_retries_transient_errors_then_succeeds(server):
    f = Fetch(FetchConfig(retries=3, backoff_s=0.01))
    assert f.fetch(f"{server}/flaky") == PAYLOAD
    assert Flaky.hits["/flaky"] == 3


def test_gives_up_after_retries_with_reason(server):
    f = Fetch(FetchConfig(retries=1, backoff_s=0.01))
    Flaky.hits["/flaky"] = -10  # keeps failing
    with pytest.raises(ItemFailed, match=r"HTTP 503.*after 2 attempt"):
        f.fetch(f"{server}/flaky")


def test_client_errors_are_not_retried(server):
    f = Fetch(FetchConfig(retries=3, backoff_s=0.01))
    with pytest.raises(ItemFailed, match="HTTP 403"):
        f.fetch(f"{server}/forbidden")
    assert Flaky.hits["/forbidden"] == 1


def test_size_cap(server, tmp_path):
    f = Fetch(FetchConfig(max_bytes=1000))
    with pytest.raises(ItemFailed, match="too_large"):
        f.fetch(f"{server}/big")
    p = tmp_path / "big.mp4"
    p.write_bytes(PAYLOAD)
    with pytest.raises(ItemFailed, match="too_large"):
        f.fetch(str(p))


def test_item_gets_hash_and_stable_id(server):
    item = Fetch().process({"source": {"url": f"{server}/ok"}})
    import hashlib

    assert item["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    assert item["video_id"] == Fetch().process({"source": {"url": f"{server}/ok#frag"}})["video_id"]


def test_unknown_scheme():
    with pytest.raises(ItemFailed, match="unsupported URI scheme"):
        Fetch().fetch("ftp://example.com/x.mp4")


class Hostile(http.server.BaseHTTPRequestHandler):
    """/cut: headers promise the payload, the body stops after 100 bytes (first two requests);
    /drip: one byte every 0.3 s, forever."""

    hits: dict = {}
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        n = Hostile.hits[self.path] = Hostile.hits.get(self.path, 0) + 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        if self.path == "/cut" and n <= 2:
            self.wfile.write(PAYLOAD[:100])
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path == "/drip":
            import time

            try:
                for byte in PAYLOAD:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.3)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        self.wfile.write(PAYLOAD)


@pytest.fixture(scope="module")
def hostile():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_body_cut_short_after_headers_is_retried(hostile):
    f = Fetch(FetchConfig(retries=3, backoff_s=0.01))
    assert f.fetch(f"{hostile}/cut") == PAYLOAD
    assert Hostile.hits["/cut"] == 3


def test_slow_drip_ends_at_the_overall_deadline(hostile):
    f = Fetch(FetchConfig(retries=0, timeout_s=5, deadline_s=1.5))
    with pytest.raises(ItemFailed, match=r"^timeout: .*deadline_s"):
        f.fetch(f"{hostile}/drip")


def test_file_url_percent_decoded_and_trailing_space_kept(tmp_path):
    from pathlib import Path

    path = tmp_path / "my clip .mp4 "
    path.write_bytes(PAYLOAD)
    f = Fetch()
    assert f.fetch(Path(path).as_uri()) == PAYLOAD
    assert f.fetch(str(path)) == PAYLOAD
    with pytest.raises(ItemFailed, match="^not_found: "):
        f.fetch(str(tmp_path / "absent.mp4"))


def test_s3_uri_without_bucket_is_a_reason():
    with pytest.raises(ItemFailed, match="^bad_uri: "):
        Fetch().fetch("s3:///key.mp4")
