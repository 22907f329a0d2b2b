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
        "annotate not a dataset": ["annotate", str(d / "o9"), "--captioner", "x", "--layer", "caption", "--version", "v2"],
        "probe a directory": ["probe", str(d)],
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
