"""`longvid ingest` resumed into a dataset holding damaged shards: exit 0, the damaged shards in
``quarantine/`` with a ledger row each, their sources ingested again, every source exactly once."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import webdataset as wds

from longvid.shards import read_ledger
from longvid.shards.catalog import open_index
from longvid.shards.repair import QUARANTINE_DIR
from longvid.shards.storage import LocalStorage
from tests.pipelines.helpers import good_videos, write_manifest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _ingest(manifest, out):
    cmd = [sys.executable, "-m", "longvid", "ingest", manifest, "--out", out, "--shards.max-videos", "1",
           "--stages.write.actors", "1", "--ray.num-cpus", "2", "--ray.object-store-mb", "200",
           "--ray.progress-bars", "false"]
    return subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=300)


def _rewrite(path, edit):
    """Rewrite a shard with ``edit(info, data) -> (info, data)`` applied to each member."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info, data = edit(info, data)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_resume_sets_damaged_shards_aside_and_reingests_their_sources(tmp_path):
    videos = good_videos(str(tmp_path / "src"), 4, seconds=3.0)
    manifest = write_manifest(str(tmp_path / "m.jsonl"), videos)
    out = str(tmp_path / "ds")
    first = _ingest(manifest, out)
    assert first.returncode == 0, first.stderr[-3000:]
    shards = open_index(LocalStorage(out)).shard_names
    assert len(shards) == 4
    unsafe, bad_record, linked = shards[0], shards[1], shards[2]

    _rewrite(os.path.join(out, unsafe), lambda i, d: (setattr(i, "name", "../" + i.name) or i, d))

    def duration_as_string(info, data):
        if info.name.endswith(".json"):
            record = json.loads(data)
            record["video"]["duration"] = "three seconds"
            data = json.dumps(record).encode()
        return info, data
    _rewrite(os.path.join(out, bad_record), duration_as_string)
    outside = str(tmp_path / "outside.tar")
    os.replace(os.path.join(out, linked), outside)
    os.symlink(outside, os.path.join(out, linked))

    done = _ingest(manifest, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 damaged shard(s) quarantined" in done.stderr + done.stdout
    for shard in (unsafe, bad_record, linked):
        assert os.path.lexists(os.path.join(out, QUARANTINE_DIR, shard))
    assert os.path.exists(outside)  # the link's target is left alone
    tars = sorted(os.path.join(out, "videos", f) for f in os.listdir(os.path.join(out, "videos")))
    samples = list(wds.WebDataset(tars, shardshuffle=False))
    assert len(samples) == len({s["__key__"] for s in samples}) == 4
    assert sorted(json.loads(s["json"])["video"]["source_uri"] for s in samples) == sorted(videos)
    ledger = read_ledger(LocalStorage(out)).to_pylist()
    rerun = [r for r in ledger if r["run_id"] == max(r["run_id"] for r in ledger)]
    quarantined = [r for r in rerun if r["action"] == "quarantined" and r["video_id"] is None]
    assert sorted(r["shard"] for r in quarantined) == sorted([unsafe, bad_record, linked])
    assert all(r["stage"] == "repair" for r in quarantined)
    reasons = {r["shard"]: r["reason"].split(":")[0] for r in quarantined}
    assert reasons == {unsafe: "unsafe_member", bad_record: "bad_record", linked: "symlinked_shard"}
    assert sum(r["action"] == "written" for r in rerun) == 3 and sum(r["action"] == "skipped" for r in rerun) == 1
    assert json.load(open(os.path.join(out, "dataset.json")))["counts"]["videos"] == 4
