"""Resume's damage check: a real dataset damaged with ``tarfile`` (unsafe names, bad records, links),
then :func:`set_aside_damaged_shards`: the damaged shard is in ``quarantine/``, its rows are gone,
the others are untouched, and nothing is read through a link."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile

import pytest

from longvid.annotators.clips import ClipConfig
from longvid.shards.catalog import open_index
from longvid.shards.damaged import set_aside_damaged_shards
from longvid.shards.index import part_paths
from longvid.shards.repair import QUARANTINE_DIR
from longvid.shards.storage import LocalStorage
from longvid.synthetic import write_known_cut_dataset, write_video

VICTIM = "videos/shard-000002.tar"  # the middle one of three (shards are named by first manifest row)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """Three shards of two short videos each."""
    base = tmp_path_factory.mktemp("damaged")
    videos = []
    for i in range(6):
        path = str(base / f"v{i}.mp4")
        truth = write_video(path, [20 + i, 25], fps=25, width=64, height=48)
        videos.append((path, truth.cuts))
    root = str(base / "ds")
    write_known_cut_dataset(root, videos, per_shard=2, clips=ClipConfig(0.5, 4.0))
    assert VICTIM in open_index(LocalStorage(root)).shard_names
    return root


def _members(path: str) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]


def _write(path: str, members, fmt=tarfile.PAX_FORMAT) -> None:
    with tarfile.open(path, "w", format=fmt) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def rename_first(name: str):
    def damage(members):
        members[0][0].name = name
        return members
    return damage


def edit_record(edit):
    def damage(members):
        for info, data in members:
            if info.name.endswith(".json"):
                record = json.loads(data)
                new = edit(record)
                members[members.index((info, data))] = (info, new if isinstance(new, bytes) else json.dumps(new).encode())
                return members
    return damage


def _set(record, path, value):
    target = record
    for name in path[:-1]:
        target = target[name]
    target[path[-1]] = value
    return record


def add_member(info: tarfile.TarInfo):
    def damage(members):
        return members + [(info, b"")]
    return damage


def _link(name, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = "/etc/passwd"
    return info


DAMAGE = {
    "dotdot name": rename_first("../x"),
    "absolute name": rename_first("/tmp/x.mp4"),
    "newline in name": rename_first("a\nb.mp4"),
    "duration a string": edit_record(lambda r: _set(r, ["video", "duration"], "3.0")),
    "clips not a list": edit_record(lambda r: _set(r, ["clips"], "many")),
    "record not json": edit_record(lambda r: b"{not json"),
    "record a list": edit_record(lambda r: [1, 2]),
    "clip start after end": edit_record(lambda r: _set(r, ["clips", 0, "start"], 1e6)),
    "symlink member": add_member(_link("ffffffffffffffff.mp4", tarfile.SYMTYPE)),
    "hardlink member": add_member(_link("ffffffffffffffff.mp4", tarfile.LNKTYPE)),
    "device member": add_member(_link("ffffffffffffffff.mp4", tarfile.CHRTYPE)),
}


def _copy(clean, tmp_path) -> tuple[str, LocalStorage, list[str]]:
    root = str(tmp_path / "ds")
    shutil.copytree(clean, root)
    storage = LocalStorage(root)
    victim_keys = open_index(storage).read_videos([VICTIM], columns=["key"])["key"].to_pylist()
    return root, storage, victim_keys


def _check_set_aside(root, storage, victim_keys, notes, reason_class=None):
    assert [n["shard"] for n in notes] == [VICTIM]
    if reason_class:
        assert notes[0]["reason_class"] == reason_class, notes
    assert os.path.lexists(os.path.join(root, QUARANTINE_DIR, VICTIM))
    assert not os.path.lexists(os.path.join(root, VICTIM))
    assert not any(os.path.exists(os.path.join(root, p)) for p in part_paths(VICTIM))
    index = open_index(storage)
    assert VICTIM not in index.shard_names and len(index.shard_names) == 2
    keys = index.videos_dataset().to_table(columns=["key"])["key"].to_pylist()
    assert len(keys) == 4 and not set(keys) & set(victim_keys)


@pytest.mark.parametrize("case", list(DAMAGE))
@pytest.mark.parametrize("with_part", [True, False], ids=["replaced", "part-missing"])
def test_a_damaged_shard_is_set_aside_and_the_rest_kept(clean, tmp_path, case, with_part):
    root, storage, victim_keys = _copy(clean, tmp_path)
    path = os.path.join(root, VICTIM)
    _write(path, DAMAGE[case](_members(path)))
    if not with_part:  # the part of a killed run's last shard is missing: resume rebuilds it from the tar
        for part in part_paths(VICTIM):
            os.unlink(os.path.join(root, part))
    repaired, notes = set_aside_damaged_shards(storage)
    assert repaired == []
    _check_set_aside(root, storage, victim_keys, notes)
    assert notes[0]["reason"].split(":")[0] in ("unsafe_member", "bad_record", "not_a_tar")
    assert sorted(notes[0]["keys"]) == (sorted(victim_keys) if with_part else [])
    assert set_aside_damaged_shards(storage) == ([], [])  # idempotent


def test_a_symlinked_shard_is_moved_as_a_link_and_never_read(clean, tmp_path):
    root, storage, victim_keys = _copy(clean, tmp_path)
    outside = tmp_path / "outside.tar"
    shutil.move(os.path.join(root, VICTIM), outside)
    os.symlink(outside, os.path.join(root, VICTIM))
    _, notes = set_aside_damaged_shards(storage)
    _check_set_aside(root, storage, victim_keys, notes, "symlinked_shard")
    assert os.path.islink(os.path.join(root, QUARANTINE_DIR, VICTIM)) and outside.exists()
    assert sorted(notes[0]["keys"]) == sorted(victim_keys)


def test_a_truncated_shard_without_its_part_is_set_aside(clean, tmp_path):
    root, storage, victim_keys = _copy(clean, tmp_path)
    path = os.path.join(root, VICTIM)
    with open(path, "r+b") as f:
        f.truncate(700)
    for part in part_paths(VICTIM):
        os.unlink(os.path.join(root, part))
    _, notes = set_aside_damaged_shards(storage)
    _check_set_aside(root, storage, victim_keys, notes, "not_a_tar")


def test_a_missing_part_of_a_good_shard_is_rebuilt_not_set_aside(clean, tmp_path):
    root, storage, _ = _copy(clean, tmp_path)
    for part in part_paths(VICTIM):
        os.unlink(os.path.join(root, part))
    repaired, notes = set_aside_damaged_shards(storage)
    assert repaired == [VICTIM] and notes == []
    assert len(open_index(storage).videos_dataset().to_table(columns=["key"])) == 6


def test_an_intact_dataset_reads_no_tar(clean, tmp_path, monkeypatch):
    root, storage, _ = _copy(clean, tmp_path)
    opened = []
    real = LocalStorage.open_read
    monkeypatch.setattr(LocalStorage, "open_read", lambda self, p: opened.append(p) or real(self, p))
    assert set_aside_damaged_shards(storage) == ([], [])
    assert not [p for p in opened if p.endswith(".tar")]
