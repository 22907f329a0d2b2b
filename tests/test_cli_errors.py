"""Every command on bad input: exit code != 0, exactly one line on stderr, no traceback."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _longvid(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=ROOT, RAY_USAGE_STATS_ENABLED="0")
    env.pop("LONGVID_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "longvid", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "m.jsonl").write_text(json.dumps({"url": str(d / "nothing.mp4")}) + "\n")
    (d / "evil.yaml").write_text(f"fetch: !!python/object/apply:os.system ['touch {d}/pwned']\n")
    (d / "a-file").write_text("not a folder")
    (d / "manifest-dir.csv").mkdir()
    bad = d / "bad-ds"
    bad.mkdir()
    (bad / "dataset.json").write_text(json.dumps({"schema_version": 1, "counts": {"videos": "many"}, "layers": []}))
    return d


def cases(d):
    m = str(d / "m.jsonl")
    return {
        "yaml python tag": ["ingest", m, "--out", str(d / "o1"), "--config", str(d / "evil.yaml")],
        "max-videos 0": ["ingest", m, "--out", str(d / "o2"), "--shards.max-videos", "0"],
        "out is a file": ["ingest", m, "--out", str(d / "a-file")],
        "out s3 without bucket": ["ingest", m, "--out", "s3:///key.mp4"],
        "manifest is a directory": ["ingest", str(d / "manifest-dir.csv"), "--out", str(d / "o3")],
        "manifest s3 missing": ["ingest", "s3://no-such-bucket-lv/m.jsonl", "--out", str(d / "o4")],
        "stats wrong types": ["stats", str(d / "bad-ds")],
        "export wrong types": ["export", "llava", str(d / "bad-ds"), "--out", str(d / "export")],
        "export into dataset": ["export", "llava", str(d / "bad-ds"), "--out", str(d / "bad-ds" / "sub")],
        "export onto dataset": ["export", "llava", str(d / "bad-ds"), "--out", str(d / "bad-ds")],
        "lease stale-after 0": ["ingest", m, "--out", str(d / "o5"), "--lease.stale-after-s", "0"],
        "index lease wait negative": ["index", str(d / "bad-ds"), "--lease.wait-s", "-1"],
        "annotate not a dataset": ["annotate", str(d / "o9"), "--captioner", "x", "--layer", "caption", "--version", "v2"],
        "probe a directory": ["probe", str(d)],
    }


# case → words the one line must hold (where the generic checks could pass for the wrong reason)
EXPECT = {
    "yaml python tag": "!!python/object",
    "max-videos 0": "shards.max_videos must be positive",
    "out is a file": "is an existing file",
    "export into dataset": "inside the dataset",
    "export onto dataset": "inside the dataset",
    "lease stale-after 0": "lease.stale_after_s must be positive",
    "index lease wait negative": "lease.wait_s must be 0 or more",
}


@pytest.mark.parametrize("case", list(cases(__import__("pathlib").Path("/x"))))
def test_bad_input_is_one_line(inputs, s3_server, case):
    done = _longvid(*cases(inputs)[case])
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1, done.stderr
    assert not (inputs / "pwned").exists()
    assert not os.path.exists(inputs / "a-file" / "videos")
    assert EXPECT.get(case, "") in lines[0], lines[0]
    assert not os.path.exists(inputs / "bad-ds" / "_lease.json")  # refused before any lease or write


@pytest.fixture
def busy_dataset(tmp_path):
    """A (small, empty) dataset whose lease another live run holds, renewed by its heartbeat."""
    from longvid.shards.dataset import write_dataset_json
    from longvid.shards.lease import DatasetLease, LeaseConfig
    from longvid.shards.storage import Storage

    storage = Storage.for_uri(str(tmp_path / "ds"))
    write_dataset_json(storage)
    (tmp_path / "m.jsonl").write_text(json.dumps({"url": str(tmp_path / "nothing.mp4")}) + "\n")
    with DatasetLease(storage, "the-other-run", "ingest", LeaseConfig(stale_after_s=60)):
        yield tmp_path


@pytest.mark.parametrize("command", ["ingest", "annotate", "index"])
def test_busy_dataset_is_one_line(busy_dataset, command):
    ds = str(busy_dataset / "ds")
    args = {"ingest": ["ingest", str(busy_dataset / "m.jsonl"), "--out", ds],
            "annotate": ["annotate", ds, "--captioner", "x", "--layer", "caption", "--version", "v2"],
            "index": ["index", ds]}[command]
    done = _longvid(*args)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 3 and "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"longvid {command}: dataset ") and "in use by run the-other-run (ingest" in lines[0]
    assert "--lease.wait-s" in lines[0]
