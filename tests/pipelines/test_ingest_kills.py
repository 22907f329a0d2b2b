"""Kill -9 of each kind of process at its worst instant, then the same command again: every
source exactly once in the shards, the index and ``dataset.json``.

The kills are real: ``LONGVID_FAULT`` makes the named process SIGKILL itself at one instant
(once, guarded by a marker file): the shard writer (a Ray Data task, retried by Ray) right after
publishing a shard and before its index part, the writer right after its index part, the content-registry actor inside a call, a
Ray worker running a stage task, and the driver after it received a writer's first rows; and the
registry at a duplicate claim, which loses the first claim (the end-of-run repair keeps the content once).
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import pyarrow.compute as pc
import pytest
import webdataset as wds

from longvid.shards.index import read_videos_index
from longvid.shards.ledger import read_ledger
from longvid.shards.storage import LocalStorage
from tests.pipelines.helpers import good_videos, write_manifest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCES = 6


def _run(manifest, out, env, timeout=300):
    cmd = [sys.executable, "-m", "longvid", "ingest", manifest, "--out", out,
           "--shards.max-videos", "2", "--ray.num-cpus", "2",  # shard writers: Ray Data tasks (the default)
           "--ray.object-store-mb", "200", "--ray.progress-bars", "false",
           "--lease.stale-after-s", "10", "--lease.wait-s", "60"]  # a killed driver's lease: taken over after 10 s
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out_text, err_text = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the killed driver left behind (raylet, workers)
        except ProcessLookupError:
            pass
    return proc.returncode, out_text, err_text


def _assert_exactly_once(out, videos):
    shard_dir = os.path.join(out, "videos")
    shards = sorted(os.path.join(shard_dir, f) for f in os.listdir(shard_dir))
    assert all(s.endswith(".tar") for s in shards), "no partial shard may be visible"
    samples = list(wds.WebDataset(shards, shardshuffle=False))
    keys = [s["__key__"] for s in samples]
    assert len(keys) == len(set(keys)) == len(videos), sorted(keys)
    assert sorted(json.loads(s["json"])["video"]["source_uri"] for s in samples) == sorted(videos)
    index = read_videos_index(LocalStorage(out))
    assert index.num_rows == len(videos) == len(pc.unique(index["key"]))
    meta = json.load(open(os.path.join(out, "dataset.json")))
    assert meta["counts"]["videos"] == len(videos)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill-sources")
    videos = good_videos(str(folder / "src"), SOURCES, seconds=3.0)
    return videos, write_manifest(str(folder / "m.jsonl"), videos)


@pytest.mark.parametrize("point", ["writer-after-publish", "writer-after-index", "registry-claim", "worker-dedup",
                                   "driver-after-batch"])
def test_kill_then_rerun_exactly_once(tmp_path, sources, point):
    videos, manifest = sources
    out = str(tmp_path / "ds")
    marker = str(tmp_path / "fired")
    env = dict(os.environ, PYTHONPATH=ROOT, LONGVID_FAULT=f"{point}:{marker}")
    rc, _, err = _run(manifest, out, env)
    assert os.path.exists(marker), f"the fault point {point} never fired: {err[-2000:]}"
    if point != "driver-after-batch":  # Ray restarts the process and retries: the run itself heals
        assert rc == 0, err[-3000:]
        _assert_exactly_once(out, videos)
    env.pop("LONGVID_FAULT")
    rc, _, err = _run(manifest, out, env)
    assert rc == 0, err[-3000:]
    _assert_exactly_once(out, videos)
    if point == "driver-after-batch":  # the killed driver's lease went stale and was taken over, with a note
        notes = [r for r in read_ledger(LocalStorage(out)).to_pylist() if r["action"] == "lease_takeover"]
        assert len(notes) == 1 and "took over the lease of run " in notes[0]["reason"], notes


def test_registry_killed_with_a_claim_in_it_keeps_content_once(tmp_path, sources):
    """Two URLs with the same bytes; the registry dies at the second one's claim, so the restarted
    registry has forgotten the first: both get written, and the end-of-run repair keeps one."""
    videos, _ = sources
    copy = str(tmp_path / "copy-of-good-000.mp4")
    shutil.copyfile(videos[0], copy)
    manifest = write_manifest(str(tmp_path / "m.jsonl"), videos + [copy])
    out = str(tmp_path / "ds")
    marker = str(tmp_path / "fired")
    env = dict(os.environ, PYTHONPATH=ROOT, LONGVID_FAULT=f"registry-duplicate-claim:{marker}")
    rc, _, err = _run(manifest, out, env)
    assert os.path.exists(marker), f"the registry was never killed at a duplicate claim: {err[-2000:]}"
    assert rc == 0, err[-3000:]
    index = read_videos_index(LocalStorage(out))
    assert index.num_rows == len(videos) == len(pc.unique(index["sha256"])) == len(pc.unique(index["key"]))
    kept = index.filter(pc.equal(index["sha256"], index["sha256"][0]))  # any row: each content once
    assert kept.num_rows == 1
    meta = json.load(open(os.path.join(out, "dataset.json")))
    assert meta["counts"]["videos"] == len(videos)
    ledger = read_ledger(LocalStorage(out)).to_pylist()
    dup = [r for r in ledger if r["action"] == "duplicate"]
    assert len(dup) == 1 and dup[0]["url"] in (videos[0], copy) and dup[0]["duplicate_of"]
    assert dup[0]["duplicate_of"] in index["key"].to_pylist() and dup[0]["video_id"] not in index["key"].to_pylist()
    shard_dir = os.path.join(out, "videos")
    samples = list(wds.WebDataset(sorted(os.path.join(shard_dir, f) for f in os.listdir(shard_dir)),
                                  shardshuffle=False))
    assert len(samples) == len(videos)
