"""The stage contract on both executors: identical outputs in-process and on a real Ray, drops and
fan-outs reaching the ledger, per-stage overrides reaching Ray, and the resource check (scale down
or refuse in one line, never hang)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from longvid.annotators.base import Dropped, ItemFailed, Resources, Stage
from longvid.annotators.fetch import Fetch
from longvid.annotators.plan import Plan
from longvid.annotators.probe import Probe
from longvid.annotators.clips import ClipConfig
from longvid.annotators.segment import Segment, SegmentConfig
from longvid.pipelines.executors import LocalExecutor, RayExecutor
from longvid.pipelines.placement import (ClusterShape, Placement, ResourceError, StageOverride, fit_to_cluster)
from longvid.pipelines.shard_sink import ledger_row
from longvid.shards import read_ledger
from longvid.shards.ledger import Ledger
from longvid.shards.storage import LocalStorage
from tests.pipelines.helpers import good_videos, write_manifest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _items(paths):
    return [{"source": {"url": p, "source_index": i}} for i, p in enumerate(paths)]


def _key(item):
    return (item["source"]["source_index"], item.get("clip", {}).get("clip_id", ""))


def test_local_and_ray_give_identical_outputs(ray_session, sample_videos, tmp_path):
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(os.urandom(5000))
    paths = [v.path for v in sample_videos.values()] + [str(bad)]
    stages = lambda: [Fetch(), Probe(), Segment(), Plan()]  # noqa: E731 - fresh stage objects per executor
    local = sorted(LocalExecutor(stages()).run(_items(paths)), key=_key)
    on_ray = sorted(RayExecutor(stages()).run(_items(paths)), key=_key)
    assert local == on_ray
    assert [it["source"]["url"] for it in local if "dropped" in it] == [str(bad)]
    assert local[-1]["dropped"]["stage"] == "probe" and local[-1]["dropped"]["action"] == "failed"
    kept = [it for it in local if "dropped" not in it]
    assert kept[0]["producers"] == {"fetch": "fetch@1", "probe": "probe@1", "segment": "segment-fast@2",
                                    "plan": "plan@1"}
    assert all(it["clips"] and it["plan"] and it["media"] for it in kept)  # no sink: the bytes are still there


class OnePerClip(Stage):
    """Fan-out: a video in, one item per clip out; the second clip of each video is dropped."""

    name = "per_clip"

    def process(self, item):
        out = []
        for i, clip in enumerate(item["clips"]):
            child = {"source": item["source"], "video_id": item["video_id"], "clip": {"clip_id": clip["clip_id"]}}
            out.append(Dropped(child, "second clip rejected") if i == 1 else child)
        return out


class Refuse(Stage):
    name = "refuse"

    def process(self, item):
        if item["source"]["source_index"] == 0:
            raise ItemFailed("not this one")
        return item


class LedgerSink(Stage):
    """Receives kept and dropped items; each becomes a ledger row."""

    name = "ledger"
    receives_dropped = True
    batch_size = 4

    def process_batch(self, items):
        return [dict(ledger_row(it), url=it["source"]["url"] + "#" + it.get("clip", {}).get("clip_id", ""))
                for it in items]


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_drop_and_a_fan_out_reach_the_ledger(ray_session, sample_videos, tmp_path, executor):
    paths = [sample_videos["a_h264"].path, sample_videos["c_hevc"].path]
    short_clips = SegmentConfig(clips=ClipConfig(min_seconds=1.0, max_seconds=8.0))
    stages = [Fetch(), Refuse(), Probe(), Segment(short_clips), OnePerClip(), LedgerSink()]
    run = LocalExecutor(stages) if executor == "local" else RayExecutor(stages)
    storage = LocalStorage(str(tmp_path / executor))
    ledger = Ledger(storage, "run-1")
    for row in run.run(_items(paths)):
        ledger.add(**row)
    ledger.flush()
    rows = read_ledger(storage).to_pylist()
    refused = [r for r in rows if r["stage"] == "refuse"]
    assert len(refused) == 1 and refused[0]["reason"] == "not this one" and refused[0]["status"] == "failed"
    clips = [r for r in rows if r["stage"] != "refuse"]
    assert len(clips) >= 3, clips  # c_hevc has three shots: three clip items fanned out of one video
    assert [r["reason"] for r in clips if r["action"] == "failed"] == ["second clip rejected"]
    assert {r["stage"] for r in clips if r["action"] == "failed"} == {"per_clip"}


class WhereAmI(Stage):
    """Records the resources Ray assigned to the worker running it, and the batch it was given."""

    name = "where"
    resources = Resources(num_cpus=1.0)

    def process_batch(self, items):
        import ray

        assigned = ray.get_runtime_context().get_assigned_resources()
        for it in items:
            it["assigned"], it["batch"], it["free_cpus"] = assigned, len(items), self.free_cpus
        return items


class WhereAmIActor(WhereAmI):
    name = "where_actor"

    def setup(self):
        self.ready = True


def test_per_stage_overrides_reach_ray(ray_session):
    items = [{"source": {"url": f"x{i}", "source_index": i}} for i in range(6)]
    overrides = {"where": StageOverride(num_cpus=0.25, batch_size=3),
                 "where_actor": StageOverride(num_cpus=0.5, actors=2, batch_size=2)}
    executor = RayExecutor([WhereAmI(), WhereAmIActor()], overrides)
    assert [(p.name, p.num_cpus, p.actors, p.batch_size) for p in executor.placements] == [
        ("where", 0.25, 0, 3), ("where_actor", 0.5, 2, 2)]
    out = list(executor.run(items))
    assert len(out) == 6
    assert {it["assigned"]["CPU"] for it in out} == {0.5}  # the actor stage ran last and overwrote
    assert max(it["batch"] for it in out) <= 2
    assert {it["free_cpus"] for it in out} == {3.0}  # 4 CPUs, 2 actors x 0.5 held: what window tasks can get
    tasks = list(RayExecutor([WhereAmI()], overrides).run(items))
    assert {it["assigned"]["CPU"] for it in tasks} == {0.25} and max(it["batch"] for it in tasks) <= 3
    assert {it["free_cpus"] for it in tasks} == {4.0}


class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k):
        self.n += k
        return self.n


def test_names_bound_to_one_state_share_one_actor(ray_session):
    """As in LocalExecutor, two names for one object are one state (and one worker process)."""
    import ray

    shared, other = Counter(), Counter()
    executor = RayExecutor([WhereAmI()], shared={"ingest": shared, "content": shared, "hashes": other})
    try:
        assert len({a._actor_id for a in executor._actors.values()}) == 2
        executor.shared["ingest"].add(2)
        assert executor.shared["content"].add(1) == 3  # the same state through the other name
        assert executor.shared["hashes"].add(1) == 1
    finally:
        executor.close()
    ray.get(ray.put(0))  # the cluster is still usable after close killed each actor once


class FanOut(Stage):
    name = "fan"
    fans_out = True


class Pool(Stage):
    name = "pool"
    batch_size = 64
    actors = 2

    def setup(self):
        pass


def test_an_actor_pool_is_cut_to_the_batches_its_input_makes():
    from longvid.pipelines.executors import pools_for_input, resolve

    stages = [WhereAmI(), Pool()]
    placements = resolve(stages, {})
    assert [p.actors for p in pools_for_input(stages, placements, 5)] == [0, 1]  # 5 videos: one batch of 64
    assert [p.actors for p in pools_for_input(stages, placements, 65)] == [0, 2]
    assert [p.actors for p in pools_for_input(stages, placements, 10_000)] == [0, 2]  # never more than declared
    fanned = [FanOut(), Pool()]
    assert [p.actors for p in pools_for_input(fanned, resolve(fanned, {}), 5)] == [0, 2]  # 5 videos, any clips
    assert placements[1].actors == 2  # the executor's own placements are not changed


# -- the resource check ---------------------------------------------------------------------------

def _shape(cpus, gpus=0.0):
    return ClusterShape(total_cpus=cpus, total_gpus=gpus, node_cpus=cpus, node_gpus=gpus, node_memory_mb=8192)


def test_one_cpu_scales_the_writer_pool_and_the_segment_task_down():
    placements = [Placement("fetch", 0.25, 0, 0, 0, 1), Placement("segment", 1.0, 0, 0, 0, 1),
                  Placement("write", 0.5, 0, 0, 2, 64)]
    fitted, notes = fit_to_cluster(placements, _shape(1))
    by_name = {p.name: p for p in fitted}
    assert by_name["write"].actors == 1 and by_name["write"].num_cpus == 0.5
    assert by_name["segment"].num_cpus == 0.5 and by_name["fetch"].num_cpus == 0.25
    assert any("segment" in n for n in notes)
    held = sum(p.actors * p.num_cpus for p in fitted if p.actors)
    assert all(p.num_cpus <= 1 - held for p in fitted if not p.actors)  # every task can start beside the pools


def test_a_gpu_request_on_a_cpu_cluster_is_refused_in_one_line():
    with pytest.raises(ResourceError) as info:
        fit_to_cluster([Placement("segment", 1.0, 1.0, 0, 1, 1)], _shape(4))
    message = str(info.value)
    assert "\n" not in message and "segment" in message and "--stages.segment.num-gpus 0" in message
    fitted, _ = fit_to_cluster([Placement("caption", 1.0, 0.5, 0, 8, 4)], _shape(16, gpus=2))
    assert fitted[0].actors == 4  # 8 actors x 0.5 GPU on 2 GPUs: scaled to what fits


def _ingest(manifest, out, *flags, timeout=240):
    cmd = [sys.executable, "-m", "longvid", "ingest", manifest, "--out", out, "--ray.object-store-mb", "200",
           "--ray.progress-bars", "false", *flags]
    return subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=timeout)


def test_ingest_on_a_one_cpu_ray_finishes_and_a_gpu_request_stops_at_once(tmp_path):
    videos = good_videos(str(tmp_path / "src"), 2, seconds=3.0)
    manifest = write_manifest(str(tmp_path / "m.jsonl"), videos)
    done = _ingest(manifest, str(tmp_path / "one-cpu"), "--ray.num-cpus", "1")  # hung before the check
    assert done.returncode == 0, done.stderr[-3000:]
    assert "written 2" in done.stdout
    refused = _ingest(manifest, str(tmp_path / "gpu"), "--ray.num-cpus", "1", "--stages.segment.num-gpus", "1",
                      timeout=120)
    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]
    assert "stage segment" in last and "--stages.segment.num-gpus 0" in last and "Traceback" not in refused.stderr
