"""The training stream over ingested shards: exact resume, exact-once over ranks x workers, seeded
weighted mixing, seek-decoded frames equal to a full decode, S3, corrupt samples, the trainer."""

from __future__ import annotations

import copy
import itertools
import json
import os
import shutil

import av
import numpy as np
import pytest

from longvid.annotators.clips import ClipConfig
from longvid.shards import Storage, read_record, write_layer_part
from longvid.shards.index import read_index_parts
from longvid.shards.schema import video_id_for
from longvid.shards.seekio import DecodeStats, MemberFile, decode_frames
from longvid.shards.stream import (
    ShardStream,
    SourceSpec,
    StreamConfig,
    TokenBudgetBatcher,
    training_source,
)
from longvid.synthetic import write_known_cut_dataset, write_video

# (seconds, width, GOP) per video; the 48 s one is the long one (bucket 30-60s) and has no captions
VIDEOS = [(8, 80, 12), (6, 64, 12), (10, 80, 12), (7, 64, 12), (48, 96, 4), (5, 80, 12)]
FPS = 25
UNCAPTIONED = 4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A dataset of six short H.264 videos (GOP 12) in two shards, with caption and writer layers."""
    base = tmp_path_factory.mktemp("stream")
    paths, cuts = [], []
    for i, (seconds, width, gop) in enumerate(VIDEOS):
        frames = seconds * FPS
        path = str(base / f"v{i}.mp4")
        truth = write_video(path, [frames // 3 + i, frames // 3, frames - 2 * (frames // 3) - i], fps=FPS,
                            width=width, height=48, gop=gop)
        paths.append(path)
        cuts.append(truth.cuts)
    root = str(base / "ds")
    write_known_cut_dataset(root, list(zip(paths, cuts)), clips=ClipConfig(1.0, 4.0))
    storage = Storage.for_uri(root)
    videos, clips = read_index_parts(storage)
    keys = [video_id_for(p) for p in paths]
    captions = [{"key": c["key"], "clip_id": c["clip_id"], "start": c["start"], "end": c["end"],
                 "value": f"caption of {c['clip_id']}", "value_type": "text", "producer": "test"}
                for c in clips.to_pylist() if c["key"] != keys[UNCAPTIONED]]
    shard_of = {v["key"]: v["shard"] for v in videos.to_pylist()}
    write_by_shard(storage, "caption", "v1", captions, shard_of)
    summaries = [{"key": k, "clip_id": None, "start": 0.0, "end": 1.0, "producer": "test", "value_type": "json",
                  "value": json.dumps({"task": "summary", "text": f"summary of {k}"})} for k in keys[:2]]
    write_by_shard(storage, "writer", "v1", summaries, shard_of)
    return {"root": root, "paths": dict(zip(keys, paths)), "videos": videos.to_pylist(), "clips": clips.to_pylist()}


def write_by_shard(storage, layer, version, rows, shard_of) -> None:
    """Layer parts named after their video shard (``<shard-base>-0000``), as `longvid annotate` writes."""
    by_shard: dict[str, list[dict]] = {}
    for row in rows:
        by_shard.setdefault(shard_of[row["key"]], []).append(row)
    for shard, part in by_shard.items():
        write_layer_part(storage, layer, version, shard.rsplit("/", 1)[-1][: -len(".tar")] + "-0000", part)


def stream(root, rank=0, world_size=1, **options) -> ShardStream:
    sources = options.pop("sources", None) or [SourceSpec(root)]
    options.setdefault("stage", "stage1")
    return ShardStream(StreamConfig(sources=sources, **options), rank=rank, world_size=world_size)


def trace(samples) -> list[tuple[str, tuple[int, ...]]]:
    return [(s["__key__"], tuple(s["frame_indices"])) for s in samples]


def full_decode(path: str) -> list[np.ndarray]:
    with av.open(path) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


# -- 1. resume -----------------------------------------------------------------------------------
def test_resume_anywhere_repeats_the_uninterrupted_order(dataset):
    mix = [SourceSpec(dataset["root"], 0.5, unit="video"), SourceSpec(dataset["root"], 0.5, unit="clip")]
    straight = trace(stream(dataset["root"], sources=mix, epochs=2, seed=3))
    assert len(straight) > 20 and len({k for k, _ in straight}) < len(straight)  # two epochs of a source at least
    for k in (0, 3, 7, 19):
        first = stream(dataset["root"], sources=mix, epochs=2, seed=3)
        consumed = list(itertools.islice(iter(first), k))
        state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
        assert state["position"] == k
        resumed = stream(dataset["root"], sources=mix, epochs=2, seed=3)
        resumed.load_state_dict(state)
        assert trace(consumed) + trace(resumed) == straight, k
    other = stream(dataset["root"], sources=mix, epochs=2, seed=4)
    with pytest.raises(ValueError, match="different stream recipe.*seed"):
        other.load_state_dict(state)


def test_each_epoch_is_a_new_seeded_order_of_every_sample(dataset):
    keys = [k for k, _ in trace(stream(dataset["root"], unit="clip", epochs=2, seed=1))]
    half = len(keys) // 2
    assert sorted(keys[:half]) == sorted(keys[half:]) == sorted(c["clip_id"] for c in dataset["clips"])
    assert keys[:half] != keys[half:]
    assert keys == [k for k, _ in trace(stream(dataset["root"], unit="clip", epochs=2, seed=1))]
    assert keys != [k for k, _ in trace(stream(dataset["root"], unit="clip", epochs=2, seed=2))]


# -- 2. ranks x workers --------------------------------------------------------------------------
def test_two_ranks_two_workers_see_every_clip_once(dataset):
    seen, per_rank = [], {}
    for rank in (0, 1):
        s = stream(dataset["root"], rank=rank, world_size=2, unit="clip", epochs=1, seed=5, threaded_decode=False)
        keys = [item["__key__"] for item in s.loader(num_workers=2)]
        assert keys == [k for k, _ in trace(stream(dataset["root"], rank=rank, world_size=2, unit="clip", epochs=1,
                                                   seed=5))]  # the same order as one process
        per_rank[rank] = keys
        seen += keys
    assert sorted(seen) == sorted(c["clip_id"] for c in dataset["clips"])  # none twice, none lost
    assert abs(len(per_rank[0]) - len(per_rank[1])) <= 1
    # resume a worker-fed rank mid-epoch, with a different worker count
    s = stream(dataset["root"], rank=1, world_size=2, unit="clip", epochs=1, seed=5)
    loader = s.loader(num_workers=2)
    head = [item["__key__"] for item in itertools.islice(iter(loader), 4)]
    state = json.loads(json.dumps(loader.state_dict()))
    again = stream(dataset["root"], rank=1, world_size=2, unit="clip", epochs=1, seed=5).loader(num_workers=1)
    again.load_state_dict(state)
    assert head + [item["__key__"] for item in again] == per_rank[1]


# -- 3. mixing -----------------------------------------------------------------------------------
def test_mixing_weights_hold_and_each_source_cycles_whole_epochs(dataset):
    mix = [SourceSpec(dataset["root"], 0.8, unit="clip", name="clips"),
           SourceSpec(dataset["root"], 0.2, unit="video", name="videos")]
    draws = list(itertools.islice(iter(stream(dataset["root"], sources=mix, decode=False, seed=9)), 500))
    share = sum(d["source"] == "clips" for d in draws) / len(draws)
    assert abs(share - 0.8) < 0.05, share
    videos = [d["__key__"] for d in draws if d["source"] == "videos"]
    n = len(dataset["videos"])
    for epoch in range(len(videos) // n):
        assert sorted(videos[epoch * n : (epoch + 1) * n]) == sorted(v["key"] for v in dataset["videos"])
    assert all("frames" not in d for d in draws)
    # a duration-bucket filter keeps only its bucket
    long_only = stream(dataset["root"], sources=[SourceSpec(dataset["root"], buckets=["30-60s"])], decode=False,
                       epochs=1)
    assert [s["__key__"] for s in long_only] == [v["key"] for v in dataset["videos"] if v["bucket"] == "30-60s"]


def test_token_budget_batches_group_lengths_and_resume(dataset):
    def batcher():
        s = stream(dataset["root"], unit="clip", stage="stage3", decode=False, epochs=1, seed=2)
        return TokenBudgetBatcher(s, budget=3000, buffer_size=8, seed=2)

    straight = [[s["__key__"] for s in b] for b in batcher()]
    assert sorted(k for b in straight for k in b) == sorted(c["clip_id"] for c in dataset["clips"])
    sizes = set()
    for b in batcher():
        tokens = [s["visual_tokens"] for s in b]
        assert len(b) * max(tokens) <= 3000 and max(tokens) - min(tokens) <= 1024 - 384
        sizes.add(len(b))
    assert len(sizes) > 1  # short clips fill bigger batches
    first = batcher()
    head = [[s["__key__"] for s in b] for b in itertools.islice(iter(first), 3)]
    state = json.loads(json.dumps(first.state_dict()))
    again = batcher()
    again.load_state_dict(state)
    assert head + [[s["__key__"] for s in b] for b in again] == straight


def test_token_budget_batches_per_buffer_give_every_rank_the_same_batch_count(corpus, dataset):
    counts, seen = [], []
    for rank in range(3):  # uneven lengths per rank, equal sample counts (even_ranks="pad")
        s = stream(dataset["root"], rank=rank, world_size=3, unit="clip", stage="stage3", decode=False, epochs=1)
        batches = list(TokenBudgetBatcher(s, budget=3000, buffer_size=8, seed=2, batches_per_buffer=3))
        counts.append(len(batches))
        seen += [x["__key__"] for b in batches for x in b if not x.get("padding")]
        assert all(b for b in batches)
    assert sorted(seen) == sorted(c["clip_id"] for c in dataset["clips"])
    items = -(-len(dataset["clips"]) // 3)  # per rank
    expected = 3 * (items // 8) + min(3, items % 8)  # 3 per full buffer of 8, then the rest
    assert counts == [expected] * 3, (counts, items)


# -- 4. frames -----------------------------------------------------------------------------------
def test_frames_equal_a_full_decode_at_the_stored_plan(dataset):
    root = dataset["root"]
    storage = Storage.for_uri(root)
    long_video = max(dataset["videos"], key=lambda v: v["num_frames"])
    record = read_record(storage, long_video["shard"], long_video["json_offset"], long_video["json_size"])
    reference = full_decode(dataset["paths"][long_video["key"]])
    clip = record["clips"][-2]  # far from the start: forward seeks under ~32 KiB read through
    for unit, key, plan in (("video", long_video["key"], record["plan"]), ("clip", clip["clip_id"], clip["plan"])):
        s = stream(root, unit=unit, stage="stage3", epochs=1)
        sample = next(x for x in s if x["__key__"] == key)
        assert sample["frame_indices"] == plan["stages"]["stage3"]["frames"]
        assert sample["frames"].shape == (len(sample["frame_indices"]), 48, 96, 3)
        expected = np.stack([reference[i] for i in sample["frame_indices"]])
        assert np.array_equal(sample["frames"].numpy(), expected)
        assert sample["visual_tokens"] == 16 * len(sample["frame_indices"])
    assert sample["start"] == clip["start"] and sample["end"] == clip["end"]
    # a clip of the long video reads about its span, not the member
    member = MemberFile(storage, long_video["shard"], long_video["media_offset"], long_video["media_size"],
                        block_size=4096)
    stats = DecodeStats()
    frames = decode_frames(member, sample["frame_indices"], stats=stats)
    assert np.array_equal(frames, expected)
    assert stats.frames_decoded <= clip["end_frame"] - clip["start_frame"] + 12 < long_video["num_frames"] / 4
    assert member.bytes_fetched < 0.5 * long_video["media_size"], (member.bytes_fetched, long_video["media_size"])
    resized = stream(root, stage="stage1", epochs=1, resize=24)
    assert all(x["frames"].shape[1] == 24 for x in itertools.islice(iter(resized), 3))


def test_seeking_is_exact_for_any_frame_set(dataset):
    path = next(p for k, p in dataset["paths"].items() if k == dataset["videos"][0]["key"])
    reference = full_decode(path)
    rng = np.random.default_rng(0)
    for forward in (None, 0, 10_000):
        for _ in range(4):
            indices = rng.choice(len(reference), size=int(rng.integers(1, 30)), replace=False).tolist()
            frames = decode_frames(path, indices, forward_gop=forward)
            assert np.array_equal(frames, np.stack([reference[i] for i in indices])), (forward, indices)


# -- annotations ---------------------------------------------------------------------------------
def test_conversations_come_from_layers_and_unannotated_samples_are_counted(dataset):
    s = stream(dataset["root"], unit="clip", layers=["caption/v1"], decode=False, epochs=1)
    samples = list(s)
    uncaptioned = [c for c in dataset["clips"] if c["key"] == list(dataset["paths"])[UNCAPTIONED]]
    assert uncaptioned and s.stats()["dropped"] == {"no annotation": len(uncaptioned)} and s.skipped == {}
    assert len(samples) == len(dataset["clips"]) - len(uncaptioned)
    conv = samples[0]["conversations"]
    assert conv[0]["value"].startswith("<image>\nThe video lasts for") and conv[1]["value"].startswith("caption of")
    videos = list(stream(dataset["root"], layers=["caption/v1", "writer/v1"], decode=False, epochs=1))
    assert len(videos) == len(VIDEOS) - 1
    assert sum(v["conversations"][1]["value"].startswith("summary of") for v in videos) == 2
    assert all(v["conversations"] == [] for v in stream(dataset["root"], decode=False, epochs=1))


# -- 5. S3 ---------------------------------------------------------------------------------------
def test_streams_from_s3_like_from_a_folder(dataset, s3_bucket):
    import boto3

    client = boto3.client("s3")
    for folder, _, files in os.walk(dataset["root"]):
        for name in files:
            path = os.path.join(folder, name)
            client.upload_file(path, s3_bucket, "ds/" + os.path.relpath(path, dataset["root"]))
    local = list(itertools.islice(iter(stream(dataset["root"], unit="clip", seed=7)), 6))
    remote_stream = stream(f"s3://{s3_bucket}/ds", unit="clip", seed=7, block_size=16 * 1024)
    remote = list(itertools.islice(iter(remote_stream), 6))
    assert trace(remote) == trace(local)
    assert all(np.array_equal(a["frames"].numpy(), b["frames"].numpy()) for a, b in zip(local, remote))
    assert 0 < remote_stream.stats()["decode"]["bytes_fetched"]


# -- 6. corrupt samples --------------------------------------------------------------------------
def test_a_corrupt_sample_is_skipped_and_counted(dataset, tmp_path, caplog):
    root = str(tmp_path / "ds")
    shutil.copytree(dataset["root"], root)
    victim = dataset["videos"][1]
    with open(os.path.join(root, victim["shard"]), "r+b") as f:  # wipe the container's head and tail
        f.seek(victim["media_offset"])
        f.write(b"\0" * 1024)
        f.seek(victim["media_offset"] + victim["media_size"] - 1024)
        f.write(b"\0" * 1024)
    s = stream(root, epochs=1)
    keys = [x["__key__"] for x in s]
    assert sorted(keys) == sorted(v["key"] for v in dataset["videos"] if v["key"] != victim["key"])
    assert s.skipped == {"decode error": 1} and s.stats()["skipped"] == {"decode error": 1}
    assert victim["key"] in caplog.text


# -- 7. trainer ----------------------------------------------------------------------------------
def test_trainer_runs_on_the_stream(dataset, tmp_path):
    import torch

    from longvid.model.config import DataConfig, StageConfig, TrainConfig
    from longvid.model.tiny import tiny_model_config
    from longvid.model.trainer import train

    stage = StageConfig("stage2", ["all"], 1e-3, 1e-3, 4, 8, 4096, steps=2)
    options = {"datasets": [dataset["root"]], "unit": "clip", "layers": ["caption/v1"], "resize": 48}
    config = TrainConfig(model=tiny_model_config(str(tmp_path / "tiny")), stages=[stage],
                         data=DataConfig(source="longvid.shards.stream:training_source", options=options),
                         output_dir=str(tmp_path / "run"), micro_batch_tokens=2000, max_micro_batch=2, log_every=1000)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = train(config)
    finally:
        torch.set_num_threads(threads)
    assert len(summary.records) == 2 and all(np.isfinite(r["loss"]) for r in summary.records)
    assert summary.records[0]["samples"] == 2
    source = training_source(stage, rank=0, world_size=1, seed=0, **copy.deepcopy(options))
    straight = [s["__key__"] for s in itertools.islice(iter(source), 6)]
    first = next(iter(source))
    assert first["frames"].shape[1] == 48 and len(first["frame_indices"]) in (4, 8)
    # with decoding in dataloader workers: same order, and a state to resume from
    loader = training_source(stage, rank=0, world_size=1, seed=0, workers=2, **copy.deepcopy(options))
    head = [s["__key__"] for s in itertools.islice(iter(loader), 3)]
    resumed = training_source(stage, rank=0, world_size=1, seed=0, workers=2, **copy.deepcopy(options))
    resumed.load_state_dict(json.loads(json.dumps(loader.state_dict())))
    assert head + [s["__key__"] for s in itertools.islice(iter(resumed), 3)] == straight


# -- 8. corpus-shaped index: ranks, world-size changes, even counts, filters, memory, S3 requests --
SHARDS, VIDEOS_PER_SHARD, CLIPS_PER_VIDEO = 11, 5, 3  # 165 clips: no world size below divides it


def synthetic_dataset(root: str, shards: int = SHARDS) -> str:
    """A synthetic index (real schemas, stub media) with its shard table: decode=False streams only."""
    from longvid.shards.compact import update_index
    from longvid.synthetic_index import write_synthetic_shard

    storage = Storage.for_uri(root)
    for number in range(shards):
        write_synthetic_shard(storage, number, VIDEOS_PER_SHARD, CLIPS_PER_VIDEO, stub_bytes=0)
    update_index(storage)
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = synthetic_dataset(str(tmp_path_factory.mktemp("corpus") / "ds"))
    clips = read_index_parts(Storage.for_uri(root))[1]
    return {"root": root, "clips": clips["clip_id"].to_pylist(), "start": clips["start"].to_pylist()}


def corpus_stream(root, rank=0, world_size=1, **options) -> ShardStream:
    options = {"unit": "clip", "decode": False, "epochs": 1, "seed": 11, "shard_group": 2, **options}
    return stream(root, rank=rank, world_size=world_size, **options)


def real_keys(items) -> list[str]:
    return [s["__key__"] for s in items if not s.get("padding")]


@pytest.mark.parametrize("even", ["pad", "drop"])
def test_every_rank_yields_the_same_count_and_each_clip_comes_once(corpus, even):
    world, total = 4, len(corpus["clips"])
    per_rank = [list(corpus_stream(corpus["root"], r, world, even_ranks=even)) for r in range(world)]
    counts = {len(items) for items in per_rank}
    assert counts == {-(-total // world) if even == "pad" else total // world}  # no DDP hang at the end
    keys = [k for items in per_rank for k in real_keys(items)]
    assert len(keys) == len(set(keys))
    if even == "pad":
        assert sorted(keys) == sorted(corpus["clips"])
        padding = [s for items in per_rank for s in items if s.get("padding")]
        assert len(padding) == world * counts.pop() - total and all(p["__key__"] in keys for p in padding)
    else:
        assert len(keys) == world * (total // world) and set(keys) <= set(corpus["clips"])
    # dataloader workers keep the order and the equal count; a plain run of rank 3 is the reference
    loader = corpus_stream(corpus["root"], 3, world, even_ranks=even).loader(num_workers=2)
    assert [s["__key__"] for s in loader] == [s["__key__"] for s in per_rank[3]]


def consume(s, count) -> list[dict]:
    return list(itertools.islice(iter(s), count))


def test_resume_on_another_world_size_delivers_every_sample_once(corpus):
    root = corpus["root"]
    mix = [SourceSpec(root, 0.7, unit="clip"), SourceSpec(root, 0.3, unit="video")]

    def ident(items):
        return sorted((s["source"], s["__key__"]) for s in items if not s.get("padding"))

    for sources in (None, mix):
        options = {"sources": sources} if sources else {}
        seen = []
        # two ranks stop at different positions (a token-budget trainer consumes unevenly), same step
        first = [corpus_stream(root, r, 2, **options) for r in range(2)]
        for s, count in zip(first, (23, 17)):
            seen += consume(s, count)
        states = json.loads(json.dumps({"ranks": [s.state_dict() for s in first]}))
        with pytest.raises(ValueError, match="pass every rank's state"):
            corpus_stream(root, 0, 3, **options).load_state_dict(states["ranks"][0])
        second = [corpus_stream(root, r, 3, **options) for r in range(3)]
        for s, count in zip(second, (5, 9, 2)):
            s.load_state_dict(states)
            seen += consume(s, count)
        states = json.loads(json.dumps({"ranks": [s.state_dict() for s in second]}))
        rest = []
        for r in range(2):  # and back to two ranks, to the end of the epoch
            s = corpus_stream(root, r, 2, **options)
            s.load_state_dict(states)
            rest.append(list(s))
        assert len(rest[0]) == len(rest[1])
        seen += rest[0] + rest[1]
        expected = ident(corpus_stream(root, **options)) if sources else sorted(
            (f"{root}[clip]", k) for k in corpus["clips"])
        assert len(expected) > 100 and ident(seen) == expected  # none lost, none twice


def test_resume_across_groups_and_epochs_repeats_the_uninterrupted_order(corpus):
    straight = [s["__key__"] for s in corpus_stream(corpus["root"], epochs=2)]
    assert len(straight) == 2 * len(corpus["clips"]) and straight[:165] != straight[165:]
    for k in (1, 29, 31, 164, 166, 300):  # inside a group, at group edges, across the epoch edge
        first = corpus_stream(corpus["root"], epochs=2)
        head = [s["__key__"] for s in consume(first, k)]
        state = json.loads(json.dumps(first.state_dict()))
        again = corpus_stream(corpus["root"], epochs=2)
        again.load_state_dict(state)
        assert head + [s["__key__"] for s in again] == straight, k


def test_a_state_of_the_previous_order_version_is_refused(corpus):
    s = corpus_stream(corpus["root"])
    consume(s, 3)
    state = s.state_dict()
    state["recipe"] = dict(state["recipe"], order_version=1)
    with pytest.raises(ValueError, match="different stream recipe.*order_version"):
        corpus_stream(corpus["root"]).load_state_dict(state)


def test_the_where_filter_removes_exactly_what_the_predicate_says(corpus, dataset):
    from longvid.shards.where import WhereError

    spec = SourceSpec(corpus["root"], where="start >= 15 and start < 30")
    keys = [s["__key__"] for s in corpus_stream(corpus["root"], sources=[spec])]
    assert sorted(keys) == sorted(c for c, start in zip(corpus["clips"], corpus["start"]) if 15 <= start < 30)
    with pytest.raises(WhereError, match=r"names column\(s\) \['sharpness'\]"):
        corpus_stream(corpus["root"], sources=[SourceSpec(corpus["root"], where="sharpness > 0.02")])
    # on real video rows: the long video alone, by duration
    long_only = stream(dataset["root"], sources=[SourceSpec(dataset["root"], where="duration > 30")], epochs=1,
                       decode=False)
    assert [s["__key__"] for s in long_only] == [v["key"] for v in dataset["videos"] if v["duration"] > 30]


def test_memory_holds_the_shard_table_and_a_few_groups_only(tmp_path):
    root = synthetic_dataset(str(tmp_path / "ds"), shards=40)
    per_shard_rows = VIDEOS_PER_SHARD * (1 + CLIPS_PER_VIDEO)  # a clip source reads video and clip rows
    s = corpus_stream(root, shard_group=2)
    consume(s, 5)
    source = s.sources[0]
    assert s.stats()["index_rows_read"] <= 2 * 2 * per_shard_rows  # the first group + the prefetched next
    walked = consume(s, 10_000)
    assert len(walked) + 5 == 40 * VIDEOS_PER_SHARD * CLIPS_PER_VIDEO
    assert len(source._groups) <= 3 and all(g.table.num_rows <= 2 * 15 for g in source._groups.values())
    assert s.stats()["index_rows_read"] == 40 * per_shard_rows  # each group read once in the epoch


class CountingProxy:
    """An HTTP proxy in front of the moto server that counts the requests (method, path)."""

    def __init__(self, upstream: str):
        import http.client
        import http.server
        import threading
        from urllib.parse import urlsplit

        target = urlsplit(upstream)
        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                requests.append((self.command, self.path.split("?")[0]))
                conn = http.client.HTTPConnection(target.hostname, target.port)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                reply = conn.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                for name, value in reply.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                head = self.command == "HEAD" and reply.getheader("Content-Length")
                self.send_header("Content-Length", head or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_opening_on_s3_costs_requests_that_do_not_grow_with_the_shards(tmp_path, s3_bucket, monkeypatch):
    import boto3

    client = boto3.client("s3")
    for shards in (8, 32):
        root = synthetic_dataset(str(tmp_path / f"ds{shards}"), shards=shards)
        for folder, _, files in os.walk(root):
            for name in files:
                path = os.path.join(folder, name)
                client.upload_file(path, s3_bucket, f"ds{shards}/" + os.path.relpath(path, root))
    proxy = CountingProxy(os.environ["AWS_ENDPOINT_URL"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    counts = {}
    try:
        for shards in (8, 32):
            proxy.requests.clear()
            remote = corpus_stream(f"s3://{s3_bucket}/ds{shards}", shard_group=2)
            first = next(iter(remote))
            remote.quiesce()
            counts[shards] = list(proxy.requests)
            local = corpus_stream(str(tmp_path / f"ds{shards}"), shard_group=2)
            assert first["__key__"] == next(iter(local))["__key__"]
        # exactly once over 2 ranks x 2 workers, and a 2 -> 3 rank resume, on S3 as locally
        remote_root, local_root = f"s3://{s3_bucket}/ds8", str(tmp_path / "ds8")
        everything = sorted(s["__key__"] for s in corpus_stream(local_root))
        ranks = [corpus_stream(remote_root, r, 2) for r in range(2)]
        seen = [s["__key__"] for s in ranks[0].loader(num_workers=2)] + real_keys(consume(ranks[1], 7))
        states = {"ranks": [s.state_dict() for s in ranks]}
        for r in range(3):
            resumed = corpus_stream(remote_root, r, 3)
            resumed.load_state_dict(states)
            seen += real_keys(resumed)
        assert sorted(seen) == everything
    finally:
        proxy.server.shutdown()
    for shards, requests in counts.items():
        assert sum(path.endswith("index/shards.parquet") for _, path in requests) == 1, requests
        assert not any("/videos/" in path for _, path in requests), requests  # no media, no listing
        assert not any(method == "GET" and path.rstrip("/").endswith(s3_bucket) for method, path in requests)
    assert 0 < len(counts[32]) <= len(counts[8]) + 2, counts  # the shard table and two groups, at any size


def test_a_trainer_checkpoint_of_two_ranks_resumes_on_three(corpus, tmp_path):
    # the trainer's own checkpoint files (data-rank{r}.json + the state file) carry the world-size change
    import torch

    from longvid.model.trainer import STATE_FILE, load_trainer_state

    root = corpus["root"]
    first = [corpus_stream(root, r, 2) for r in range(2)]
    seen = consume(first[0], 11) + consume(first[1], 11)
    torch.save({"world_size": 2, "step": 11}, tmp_path / STATE_FILE)
    for r, s in enumerate(first):
        (tmp_path / f"data-rank{r}.json").write_text(json.dumps(s.state_dict()))
    for r in range(3):
        state, data = load_trainer_state(str(tmp_path), r, 3)
        assert state["world_size"] == 2 and sorted(s["rank"] for s in data["ranks"]) == [0, 1]
        resumed = corpus_stream(root, r, 3)
        resumed.load_state_dict(data)
        seen += list(resumed)
    assert sorted(real_keys(seen)) == sorted(corpus["clips"])
