"""A ``dataset.json`` with wrong types or no JSON at all: ``stats`` and ``export`` exit 2 with one
line that names the file and says what to do, never a traceback; ingest rewrites it from the index."""

from __future__ import annotations

import json

import pytest

from longvid.cli import main

CASES = {
    "not json": b"{\"counts\": ",
    "not utf-8": b"\xff\xfe{}",
    "a list": json.dumps([1, 2]).encode(),
    "counts as strings": json.dumps({"schema_version": 1, "counts": {"videos": "12", "clips": 3}}).encode(),
    "layers a list": json.dumps({"schema_version": 1, "counts": {}, "layers": ["caption"]}).encode(),
    "layer versions not a list": json.dumps({"schema_version": 1, "layers": {"caption": "v1"}}).encode(),
    "schema version a string": json.dumps({"schema_version": "1"}).encode(),
    "hours a string": json.dumps({"schema_version": 1, "hours": "lots"}).encode(),
    "buckets not numbers": json.dumps({"schema_version": 1, "counts": {"video_buckets": {"0-30 s": "x"}}}).encode(),
}


@pytest.mark.parametrize("command", ["stats", "export"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_dataset_json_is_one_line_naming_the_file(tmp_path, capsys, command, case):
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "dataset.json").write_bytes(CASES[case])
    args = ["stats", str(ds), "--no-html"] if command == "stats" else ["export", "llava", str(ds), "--out",
                                                                         str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert str(ds / "dataset.json") in lines[0] and "longvid index" in lines[0], lines[0]


def test_longvid_index_rewrites_a_damaged_dataset_json_from_the_index(tmp_path, capsys):
    from longvid.synthetic import write_known_cut_dataset, write_video

    truth = write_video(str(tmp_path / "v.mp4"), [30, 30], fps=25, width=64, height=48)
    root = tmp_path / "ds"
    write_known_cut_dataset(str(root), [(truth.path, truth.cuts)])
    (root / "dataset.json").write_bytes(CASES["counts as strings"])
    assert main(["index", str(root)]) == 0
    assert "rewriting it" in capsys.readouterr().err
    assert json.loads((root / "dataset.json").read_text())["counts"]["videos"] == 1
    assert main(["stats", str(root), "--no-html"]) == 0
