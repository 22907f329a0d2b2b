"""A real two-node Ray cluster on 127.0.0.1 (head + worker) running ingestion through
`ray job submit --working-dir .`, as users do on a cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from tests.conftest import free_port
from tests.pipelines.helpers import good_videos, write_manifest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def _env():
    # Ray 2.60 enables token auth by default; this throwaway cluster listens on 127.0.0.1 only
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    return env


def _agent_ports() -> list[str]:
    # every node on this host needs its own agent ports: the defaults (52365, ...) may be held by
    # another Ray on the machine (the test session's own local Ray), and then no job agent starts
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]


def _start(args):
    args = [*args, *_agent_ports()]
    return subprocess.Popen([os.path.join(BIN, "ray"), "start", "--block", *args], env=_env(), cwd=ROOT,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def _alive_nodes(gcs: str) -> int:
    code = f"import ray; ray.init(address='{gcs}', log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60)
    return int(out.stdout.strip().splitlines()[-1])


def test_ray_job_submit_on_two_node_cluster(tmp_path):
    port, dash = free_port(), free_port()
    gcs = f"127.0.0.1:{port}"
    procs = []
    try:
        procs.append(_start(["--head", f"--port={port}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                             "--object-store-memory=200000000"]))
        _wait_http(f"http://127.0.0.1:{dash}/api/version")
        procs.append(_start([f"--address={gcs}", "--num-cpus=2", "--node-ip-address=127.0.0.1",
                             "--resources={\"worker\": 1}", "--object-store-memory=200000000"]))
        deadline = time.time() + 90
        while _alive_nodes(gcs) < 2:
            assert time.time() < deadline, "the worker node never joined"
            time.sleep(1)

        videos = good_videos(str(tmp_path / "src"), 4, seconds=4.0)
        manifest = write_manifest(str(tmp_path / "m.jsonl"), videos + [str(tmp_path / "nope.mp4")])
        out = str(tmp_path / "ds")
        submit = [os.path.join(BIN, "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir",
                  ".", "--", "python", "-m", "longvid", "ingest", manifest, "--out", out, "--stages.write.actors", "1",
                  "--ray.progress-bars", "false", "--summary-json", str(tmp_path / "summary.json")]
        deadline = time.time() + 120
        while True:  # the head's job agent comes up a little after the dashboard
            job = subprocess.run(submit, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=400)
            if "No available agent" not in job.stderr or time.time() > deadline:
                break
            time.sleep(2)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "succeeded" in job.stdout.lower()
        summary = json.load(open(tmp_path / "summary.json"))
        assert (summary["written"], summary["failed"]) == (4, 1)
        assert json.load(open(os.path.join(out, "dataset.json")))["counts"]["videos"] == 4
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
