"""Manifests read row by row: each bad row is reported with its line and why; good rows go on."""

import json

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longvid.pipelines.manifest import ManifestError, load_manifest


def _urls(manifest):
    return [r["url"] for r in manifest.iter_rows()]


def _bad(manifest):
    return {b.line: b.reason for b in manifest.bad_rows}


def test_csv_bad_rows_become_reasons_and_good_rows_go_on(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(
        b"url,title\n"
        b"/v/a.mp4,first\n"                  # 2 good
        b"/v/b.mp4,extra,field\n"            # 3 extra field
        b"/v/c.mp4\n"                        # 4 missing field
        b'/v/d.mp4,"unclosed\n'              # 5 unclosed quote
        b"/v/e.mp4,caf\xe9\n"                # 6 Latin-1
        b'/v/f.mp4,"two\nlines"\n'           # 7-8 a quoted field over two lines: good
        b"/v/g.mp4,last,cut"                 # 9 truncated last line with an extra field
    )
    m = load_manifest(str(path))
    assert _urls(m) == ["/v/a.mp4", "/v/f.mp4"]
    bad = _bad(m)
    assert sorted(bad) == [3, 4, 5, 6, 9]
    assert "3 fields" in bad[3] and "1 fields" in bad[4]
    assert "unclosed quote" in bad[5]
    assert bad[6].startswith("encoding: line 6 is not UTF-8 (byte 0xe9")
    assert all(r.startswith(("bad_row: ", "encoding: ")) for r in bad.values())
    assert m.num_rows == 7
    indices = sorted([r["source_index"] for r in m.iter_rows()] + [b.source_index for b in m.bad_rows])
    assert indices == list(range(7))  # one index per row, good or bad, in file order


def test_jsonl_bad_lines_and_drifting_types(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = [json.dumps({"url": "/v/a.mp4", "n": 1}), "[1, 2]", json.dumps({"url": 7}),
             json.dumps({"url": "/v/b.mp4", "n": "seven"}), json.dumps({"title": "no url"}), '{"url": "/v/c.mp']
    path.write_text("\n".join(lines))
    m = load_manifest(str(path))
    rows = list(m.iter_rows())
    assert [r["url"] for r in rows] == ["/v/a.mp4", "/v/b.mp4"]
    assert [r["metadata"]["n"] for r in rows] == [1, "seven"]
    bad = _bad(m)
    assert sorted(bad) == [2, 3, 5, 6]
    assert "JSON list" in bad[2] and "'url' is int" in bad[3] and "'url' is missing" in bad[5]
    assert "not valid JSON" in bad[6]


def test_parquet_rows_with_a_non_string_url(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"url": ["/v/a.mp4", None, "/v/b.mp4"], "n": [1, 2, 3]}), path)
    m = load_manifest(str(path))
    assert _urls(m) == ["/v/a.mp4", "/v/b.mp4"] and len(m.bad_rows) == 1


def test_names_are_kept_exactly(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("url\n/v/ends in space .mp4 \n")
    assert _urls(load_manifest(str(path))) == ["/v/ends in space .mp4 "]


def test_whole_manifest_errors_are_one_line(tmp_path, s3_bucket):
    with pytest.raises(ManifestError, match="is a directory"):
        load_manifest(str(tmp_path))
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(ManifestError, match="is a directory"):
        load_manifest(str(tmp_path / "d.csv"))
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(f"s3://{s3_bucket}/absent.jsonl")
    with pytest.raises(ManifestError, match="not found"):
        load_manifest("s3://no-such-bucket-here/m.jsonl")
    (tmp_path / "nourl.csv").write_text("path\n/v/a.mp4\n")
    with pytest.raises(ManifestError, match="no 'url' column"):
        load_manifest(str(tmp_path / "nourl.csv"))


def test_s3_manifest(s3_bucket):
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="m.jsonl", Body=b'{"url": "/v/a.mp4"}\n')
    assert _urls(load_manifest(f"s3://{s3_bucket}/m.jsonl")) == ["/v/a.mp4"]
