"""Shared fixtures: generated videos, a real Ray, a real S3 server (moto) and an HTTP server,
all on this machine (127.0.0.1 only)."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import threading

import pytest

from longvid.synthetic import write_video

os.environ.setdefault("RAY_ACCEPT_CLOUD_PROVIDER_ENV", "0")


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def sample_videos(video_dir):
    """A few small videos in several codecs/containers with known cuts."""
    specs = {
        "a_h264": ([40, 60, 50], "h264"),
        "b_vp9": ([75, 75], "vp9"),
        "c_hevc": ([30, 90, 60], "hevc"),
        "d_mpeg4": ([120], "mpeg4"),
    }
    out = {}
    for name, (shots, codec) in specs.items():
        from longvid.synthetic import CODECS

        path = str(video_dir / f"{name}.{CODECS[codec][0]}")
        out[name] = write_video(path, shots, fps=25, codec=codec)
    return out


@pytest.fixture(scope="session")
def ray_session(s3_server):
    """A local Ray started after the S3 server so workers inherit its endpoint and test credentials."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, object_store_memory=400 * 1024 * 1024, include_dashboard=False,
                 log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-speaking HTTP server (moto) on 127.0.0.1; boto3 finds it via AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server, request):
    import boto3

    name = "lv-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    boto3.client("s3").create_bucket(Bucket=name)
    return name


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def http_server(video_dir):
    """Serves ``video_dir`` on 127.0.0.1; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(video_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
