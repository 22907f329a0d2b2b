import io
import json
import os
import tarfile

import pytest
import webdataset as wds

from longvid.shards.reader import UnsafeMemberError, iter_shard, iter_tar_samples, read_member
from longvid.shards.storage import LocalStorage, Storage
from longvid.shards.writer import ShardWriter, encode_json

KEYS = [f"{i:016x}" for i in range(1, 8)]


def counter():
    n = iter(range(10**6))
    return lambda: next(n)


def test_shards_roll_over_and_offsets_point_at_bytes(tmp_path):
    storage = LocalStorage(str(tmp_path))
    payloads = {k: os.urandom(1000 + 700 * i) for i, k in enumerate(KEYS)}
    with ShardWriter(storage, counter(), max_samples=3) as writer:
        written = [writer.write(k, {"json": encode_json({"k": k}), "mp4": payloads[k]}) for k in KEYS]
    assert [s.name for s in writer.committed] == ["videos/shard-000000.tar", "videos/shard-000001.tar", "videos/shard-000002.tar"]
    for sample in written:
        loc = sample.members["mp4"]
        assert read_member(storage, sample.shard, loc.offset, loc.size) == payloads[sample.key]
        js = sample.members["json"]
        assert json.loads(read_member(storage, sample.shard, js.offset, js.size)) == {"k": sample.key}


def test_nothing_visible_until_commit_and_abort_leaves_nothing(tmp_path):
    storage = LocalStorage(str(tmp_path))
    writer = ShardWriter(storage, counter())
    writer.write(KEYS[0], {"json": b"{}", "mp4": b"x" * 10})
    assert storage.list("videos") == []
    writer.abort()
    assert storage.list("videos") == []
    assert not os.path.exists(tmp_path / "videos")
    with pytest.raises(RuntimeError):
        with ShardWriter(storage, counter()) as w:
            w.write(KEYS[1], {"json": b"{}"})
            raise RuntimeError("boom")
    assert storage.list("videos") == []


def test_byte_limit_starts_new_shard(tmp_path):
    storage = LocalStorage(str(tmp_path))
    with ShardWriter(storage, counter(), max_bytes=5000) as writer:
        for k in KEYS[:4]:
            writer.write(k, {"mp4": b"a" * 3000})
    assert len(writer.committed) == 4


def test_readable_by_plain_webdataset(tmp_path):
    storage = LocalStorage(str(tmp_path))
    with ShardWriter(storage, counter()) as writer:
        for k in KEYS[:3]:
            writer.write(k, {"json": encode_json({"id": k}), "mp4": k.encode()})
    ds = wds.WebDataset(str(tmp_path / "videos" / "shard-000000.tar"), shardshuffle=False)
    samples = list(ds)
    assert [s["__key__"] for s in samples] == KEYS[:3]
    assert [json.loads(s["json"])["id"] for s in samples] == KEYS[:3]
    assert [s["mp4"] for s in samples] == [k.encode() for k in KEYS[:3]]


def test_invalid_keys_and_extensions_rejected(tmp_path):
    w = ShardWriter(LocalStorage(str(tmp_path)), counter())
    for bad in ["../etc/passwd", "a.b", "ABCDEF0123456789", "short"]:
        with pytest.raises(ValueError):
            w.write(bad, {"json": b"{}"})
    with pytest.raises(ValueError):
        w.write(KEYS[0], {"../x": b"{}"})
    w.abort()


def _tar_with(name: str, data: bytes = b"x", kind=tarfile.REGTYPE) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


@pytest.mark.parametrize("name,kind", [
    ("../0123456789abcdef.json", tarfile.REGTYPE),
    ("/abs/0123456789abcdef.json", tarfile.REGTYPE),
    ("dir/0123456789abcdef.json", tarfile.REGTYPE),
    ("0123456789abcdef.json", tarfile.SYMTYPE),
    ("notakey.json", tarfile.REGTYPE),
])
def test_reader_rejects_hostile_members(name, kind):
    with pytest.raises(UnsafeMemberError):
        list(iter_tar_samples(io.BytesIO(_tar_with(name, kind=kind))))


def test_reader_groups_members_and_can_skip_media(tmp_path):
    storage = LocalStorage(str(tmp_path))
    with ShardWriter(storage, counter()) as writer:
        for k in KEYS[:2]:
            writer.write(k, {"json": b"{}", "mp4": b"media"})
    samples = list(iter_shard(storage, "videos/shard-000000.tar", exts={"json"}))
    assert [s["__key__"] for s in samples] == KEYS[:2]
    assert all("mp4" not in s and s["json"] == b"{}" for s in samples)


def test_storage_refuses_paths_outside_root(tmp_path):
    storage = Storage.for_uri(str(tmp_path))
    for bad in ["../x", "/etc/passwd", "a/../../x", "a//b"]:
        with pytest.raises(ValueError):
            storage.write_bytes(bad, b"x")
