"""Two ``longvid ingest`` runs started together on one dataset (real processes, real Ray), locally
and on a real S3 server (moto): exactly one runs, the other refuses with one line and a non-zero
code, and every source is in the dataset exactly once (a manifest row ``s3:///key.mp4`` is a ledger row). Readers are never blocked by the lease."""

import json
import os
import signal
import subprocess
import sys

import boto3
import pyarrow.compute as pc
import pytest

from longvid.cli import main
from longvid.shards.index import read_videos_index
from longvid.shards.ledger import read_ledger
from longvid.shards.lease import LEASE_PATH, DatasetLease, LeaseConfig, read_holder
from longvid.shards.schema import video_id_for
from longvid.shards.storage import Storage
from tests.pipelines.helpers import good_videos, write_manifest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _start(manifest, out):
    cmd = [sys.executable, "-m", "longvid", "ingest", manifest, "--out", out, "--shards.max-videos", "2",
           "--stages.write.actors", "1", "--ray.num-cpus", "2", "--ray.object-store-mb", "200",
           "--ray.progress-bars", "false"]
    return subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=300):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # a raylet the run left behind
        except ProcessLookupError:
            pass
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lease-sources")
    videos = good_videos(str(folder / "src"), 4, seconds=2.0)
    return videos, write_manifest(str(folder / "m.jsonl"), videos + ["s3:///key.mp4"])  # no bucket: a ledger row


def _two_runs_one_dataset(out, sources):
    videos, manifest = sources
    first, second = _start(manifest, out), _start(manifest, out)
    results = [_finish(first), _finish(second)]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 3], [r[2][-2000:] for r in results]
    refused = next(r for r in results if r[0] == 3)
    lines = [line for line in refused[2].splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in refused[2], refused[2]
    assert lines[0].startswith("longvid ingest: dataset ") and "is in use by run " in lines[0]
    assert "(ingest, host " in lines[0] and LEASE_PATH in lines[0]
    storage = Storage.for_uri(out)
    assert read_holder(storage) is None  # the run that ran gave it back
    index = read_videos_index(storage)
    assert index.num_rows == len(videos) == len(pc.unique(index["key"]))
    assert sorted(index["key"].to_pylist()) == sorted(video_id_for(v) for v in videos)
    bad = [r for r in read_ledger(storage).to_pylist() if r["url"] == "s3:///key.mp4"]
    assert len(bad) == 1 and bad[0]["stage"] == "fetch" and bad[0]["reason"].startswith("bad_uri: ")
    return storage


def test_two_local_runs(tmp_path, sources):
    out = str(tmp_path / "ds")
    storage = _two_runs_one_dataset(out, sources)
    meta = json.load(open(os.path.join(out, "dataset.json")))
    assert meta["counts"]["videos"] == len(sources[0])
    # a reader is not blocked while a writer holds the lease
    with DatasetLease(storage, "holder", "annotate", LeaseConfig(stale_after_s=60)):
        assert main(["stats", out]) == 0


def test_two_runs_on_s3(s3_server, s3_bucket, sources):
    out = f"s3://{s3_bucket}/ds"
    _two_runs_one_dataset(out, sources)
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket, Prefix="ds/")["Contents"]}
    assert "ds/dataset.json" in keys and f"ds/{LEASE_PATH}" not in keys
