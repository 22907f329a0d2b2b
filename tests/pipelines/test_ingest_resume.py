"""Kill -9 of a running ingestion, then the same command again: every good source exactly once."""

import json
import os
import signal
import subprocess
import sys
import time

import webdataset as wds

from longvid.shards import read_ledger
from longvid.shards.storage import LocalStorage
from tests.pipelines.helpers import good_videos, write_manifest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cmd(manifest, out):
    return [sys.executable, "-m", "longvid", "ingest", manifest, "--out", out,
            "--shards.max-videos", "1", "--stages.write.actors", "1", "--ray.num-cpus", "2",
            "--ray.object-store-mb", "200", "--ray.progress-bars", "false",
            "--lease.stale-after-s", "5", "--lease.wait-s", "60"]  # the rerun takes the killed run's lease once stale


def test_kill_and_resume(tmp_path):
    videos = good_videos(str(tmp_path / "src"), 14, seconds=8.0)
    manifest = write_manifest(str(tmp_path / "m.jsonl"), videos)
    out = str(tmp_path / "ds")
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(_cmd(manifest, out), cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard_dir = os.path.join(out, "videos")
    deadline = time.time() + 180
    while time.time() < deadline:
        if os.path.isdir(shard_dir) and len([f for f in os.listdir(shard_dir) if f.endswith(".tar")]) >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started, mid-run
    proc.wait()
    before = sorted(f for f in os.listdir(shard_dir) if f.endswith(".tar"))
    assert 2 <= len(before) < 14, "the run must be killed mid-way for this test to mean anything"

    done = subprocess.run(_cmd(manifest, out), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    shards = sorted(os.path.join(shard_dir, f) for f in os.listdir(shard_dir))
    assert all(s.endswith(".tar") for s in shards), "no partial shard may be visible"
    keys = [s["__key__"] for s in wds.WebDataset(shards, shardshuffle=False)]
    assert len(keys) == len(set(keys)) == 14
    sources = sorted(json.loads(s["json"])["video"]["source_uri"] for s in wds.WebDataset(shards, shardshuffle=False))
    assert sources == sorted(videos)
    ledger = read_ledger(LocalStorage(out)).to_pylist()
    last_run = max(r["run_id"] for r in ledger)
    rerun = [r for r in ledger if r["run_id"] == last_run]
    skipped = sum(r["action"] == "skipped" for r in rerun)
    written = sum(r["action"] == "written" for r in rerun)
    assert skipped >= len(before) and skipped + written == 14  # nothing committed was redone
    meta = json.load(open(os.path.join(out, "dataset.json")))
    assert meta["counts"]["videos"] == 14
