"""``longvid annotate`` end to end on a real local Ray: an ingested dataset (plus one video whose
bytes rotted after ingestion), a caption layer v1 from vLLM (CPU build) fed by the preparation
stage, a v2 from transformers decoding inline (default ``num_gpus`` auto on this GPU-less
machine) that is killed with SIGKILL and resumed, a v3 run while one shard file is away (a
storage outage, simulated by renaming the file) then filled by ``--retry-failed``, a run with
vLLM made unimportable, and a summary/QA layer written by vLLM from v1. The video shards must
stay byte-identical throughout.

Models are tiny and random: assertions are about structure, counts, keys, versions and the
ledger, never words."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from longvid.annotators.captioners import CaptionerConfig, SamplingConfig
from longvid.annotators.clips import ClipConfig
from longvid.annotators.segment import SegmentConfig
from longvid.annotators.writers import QA_FAMILIES, WriterConfig
from longvid.pipelines.annotate import AnnotateConfig, AnnotateError, PipelineConfig, run_annotate
from longvid.pipelines.ingest import IngestConfig, RayConfig, ShardConfig, run_ingest
from longvid.shards.dataset import finalize, read_dataset_json
from longvid.shards.index import committed_shards, read_clips_index, read_videos_index, write_index_part
from longvid.shards.layers import layer_parts, read_failures, read_layer, read_layer_meta, status_text
from longvid.shards.stats import dataset_stats, format_stats, layer_stats, render_html
from longvid.shards.ledger import read_ledger
from longvid.shards.reader import read_record
from longvid.shards.schema import clip_id_for, video_id_for
from longvid.shards.storage import LocalStorage
from longvid.shards.writer import ShardWriter, encode_json, shard_number
from tests.annotators.tiny import cpu_model, tiny_models
from tests.pipelines.helpers import good_videos, write_manifest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_rotten_copy(storage: LocalStorage) -> str:
    """A new shard holding a copy of the first video whose media bytes were cut in half after
    ingestion (bit rot): its record and index are fine, its pixels cannot be decoded."""
    video = read_videos_index(storage).to_pylist()[0]
    record = read_record(storage, video["shard"], video["json_offset"], video["json_size"])
    media = storage.read_range(video["shard"], video["media_offset"], video["media_size"])
    key = video_id_for("rotten://" + video["key"])
    record["video"].update(video_id=key, source_uri="rotten://" + video["key"])
    for clip in record["clips"]:
        clip["clip_id"] = clip_id_for(key, clip["start"], clip["end"])
    number = max(shard_number(s) for s in committed_shards(storage)) + 1
    writer = ShardWriter(storage, lambda: number, on_commit=lambda shard: write_index_part(storage, shard, {key: record}))
    writer.write(key, {"json": encode_json(record), video["media_member"].split(".")[-1]: media[: len(media) // 2]})
    writer.commit()
    finalize(storage)
    return key


def fingerprint(root: str) -> dict[str, str]:
    """sha256 of every file that annotate must never touch (all but annotations/ and dataset.json)."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            rel = os.path.relpath(os.path.join(folder, name), root)
            if not rel.startswith("annotations") and rel != "dataset.json":
                with open(os.path.join(root, rel), "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def dataset(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("annotate")
    paths = good_videos(str(root / "src"), 3, seconds=6.0)
    config = IngestConfig(segment=SegmentConfig(clips=ClipConfig(min_seconds=1.0, max_seconds=8.0)),
                          shards=ShardConfig(max_videos=2), ray=RayConfig(progress_bars=False))
    out = str(root / "dataset")
    summary = run_ingest(write_manifest(str(root / "manifest.jsonl"), paths), out, config)
    assert summary.written == 3
    storage = LocalStorage(out)
    rotten = add_rotten_copy(storage)
    clips = read_clips_index(storage).to_pylist()
    return {"root": out, "storage": storage, "rotten": rotten, "before": fingerprint(out),
            "good_clips": sorted(c["clip_id"] for c in clips if c["key"] != rotten),
            "rotten_clips": sorted(c["clip_id"] for c in clips if c["key"] == rotten), "models": tiny_models(tmp_path_factory)}


def caption_config(models: dict, backend: str, version: str, **pipeline) -> AnnotateConfig:
    captioner = CaptionerConfig(model=cpu_model(models["vlm"], backend), sampling=SamplingConfig(max_new_tokens=8),
                                on_overlong="keep", longest_edge=64, max_frames=4)
    pipe = PipelineConfig(**{"num_gpus": 0, "num_cpus": 1, "prepare_cpus": 0.5, "batch_size": 4, "videos_per_part": 2,
                             **pipeline})
    return AnnotateConfig(layer="caption", version=version, captioner=captioner, pipeline=pipe,
                          ray=RayConfig(progress_bars=False))


@pytest.fixture(scope="module")
def caption_v1(dataset):
    """vLLM engine in a Ray actor, fed by the CPU preparation stage."""
    config = caption_config(dataset["models"], "vllm", "v1", prepare_stage=True)
    return run_annotate(dataset["root"], config, log=lambda *_: None)


def test_v1_captions_every_clip_and_records_the_producer(dataset, caption_v1):
    storage = dataset["storage"]
    table = read_layer(storage, "caption", "v1")
    assert sorted(table["clip_id"].to_pylist()) == dataset["good_clips"]  # one caption per clip, no duplicate
    assert all(v and t == "text" for v, t in zip(table["value"].to_pylist(), table["value_type"].to_pylist()))
    meta = read_layer_meta(storage, "caption", "v1")
    assert meta["status"] == rotten_status(dataset) and meta["counts"]["rows"] == len(dataset["good_clips"])
    assert set(table["producer"].to_pylist()) == {meta["producer_id"]} == {caption_v1["producer_id"]}
    producer = meta["producer"]
    assert producer["engine"]["name"] == "vllm" and producer["model"] == dataset["models"]["vlm"]
    assert producer["prompt"]["name"] == "caption_clip.v1" and len(producer["prompt"]["sha256"]) == 64
    assert read_dataset_json(storage)["layers"]["caption"] == ["v1"]
    assert caption_v1["parts"] == 3 and caption_v1["parts_skipped"] == 0  # 2 + 1 good videos, 1 rotten


def rotten_status(dataset: dict) -> str:
    """The honest status of a caption version where only the rotten video's clips failed."""
    failed, total = len(dataset["rotten_clips"]), len(dataset["rotten_clips"]) + len(dataset["good_clips"])
    assert status_text(failed, total, False) == f"complete with {failed} failures ({100 * failed / total:.1f} %)"
    return status_text(failed, total, False)


def test_status_is_partial_complete_or_complete_with_failures(dataset, caption_v1, caption_v2):
    storage = dataset["storage"]
    assert caption_v1["status"] == rotten_status(dataset) == layer_stats(storage, "caption", "v1")["status"]
    assert caption_v2["status_at_kill"] == "partial"  # killed mid-run: parts missing
    assert layer_stats(storage, "caption", "v2")["status"] == rotten_status(dataset)  # resumed to the end
    assert read_dataset_json(storage)["layer_status"]["caption/v1"] == rotten_status(dataset)
    assert status_text(0, 10, False) == "complete" and status_text(0, 10, True) == "partial"


def test_a_video_that_cannot_be_decoded_is_in_the_ledger_and_the_rest_go_on(dataset, caption_v1):
    rows = read_ledger(dataset["storage"], "annotations/caption/v1/ledger").to_pylist()
    rotten = [r for r in rows if r["video_id"] == dataset["rotten"]]
    assert rotten[0]["status"] == "failed" and rotten[0]["stage"] == "decode"
    # members are faststart MP4 (index first), so half a file still opens and decodes until its end
    assert "video ended before caption frame" in rotten[0]["reason"]
    assert len(rotten) == len(dataset["rotten_clips"])  # one row per clip that got no caption
    good = [r for r in rows if r["video_id"] != dataset["rotten"]]
    assert len(good) == 3 and all(r["status"] == "ok" and r["action"] == "written" for r in good)
    assert caption_v1["failed_videos"] == 1 and caption_v1["videos"] == 4


def test_a_changed_recipe_needs_a_new_version(dataset, caption_v1):
    config = caption_config(dataset["models"], "vllm", "v1")
    config.captioner.sampling.max_new_tokens = 9
    with pytest.raises(AnnotateError, match="different recipe"):
        run_annotate(dataset["root"], config, log=lambda *_: None)
    for bad, reason in [(dict(version=""), "--version is required"), (dict(captioner=CaptionerConfig()), "exactly one model"),
                        (dict(writer=WriterConfig(model=cpu_model("m", "vllm"))), "exactly one model")]:
        with pytest.raises(AnnotateError, match=reason):
            run_annotate(dataset["root"], replace(caption_config(dataset["models"], "vllm", "v1"), **bad))
    with pytest.raises(ValueError, match="not a LongVid dataset"):
        run_annotate(os.path.dirname(dataset["root"]), caption_config(dataset["models"], "vllm", "v9"))


def run_cli_and_kill(dataset: dict, after_parts: int, timeout: float = 240.0) -> int:
    """Start ``longvid annotate`` for caption/v2 in a child process and SIGKILL its whole process
    group (driver, Ray, model worker) once ``after_parts`` parts are on storage."""
    models = dataset["models"]
    args = [sys.executable, "-m", "longvid", "annotate", dataset["root"], "--layer", "caption", "--version", "v2",
            "--captioner", models["vlm"], "--backend", "transformers", "--captioner.sampling.max-new-tokens", "8",
            "--captioner.on-overlong", "keep", "--captioner.longest-edge", "64", "--captioner.max-frames", "4",
            "--captioner.model.batch-size", "8", "--pipeline.prepare-stage", "false",  # num-gpus: auto (none here)
            "--pipeline.batch-size", "4", "--pipeline.videos-per-part", "1", "--ray.address", "local",
            "--ray.progress-bars", "false"]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen(args, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    try:
        while len(layer_parts(dataset["storage"], "caption", "v2")) < after_parts:
            if child.poll() is not None:
                raise AssertionError(f"annotate exited early ({child.returncode}): {child.stderr.read()[-2000:]!r}")
            if time.time() > deadline:
                raise AssertionError("no part committed in time")
            time.sleep(0.02)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        child.stderr.close()
    return len(layer_parts(dataset["storage"], "caption", "v2"))


@pytest.fixture(scope="module")
def caption_v2(dataset, caption_v1):
    """transformers, decoding inline, one video per part: killed after its first part, then resumed."""
    committed = run_cli_and_kill(dataset, after_parts=1)
    status_at_kill = layer_stats(dataset["storage"], "caption", "v2")["status"]
    config = caption_config(dataset["models"], "transformers", "v2", prepare_stage=False, videos_per_part=1)
    config.captioner.model.batch_size = 8
    summary = run_annotate(dataset["root"], config, log=lambda *_: None)
    return {"committed_at_kill": committed, "summary": summary, "status_at_kill": status_at_kill,
            "status": summary["status"]}


def test_killed_run_resumes_without_losing_or_repeating_work(dataset, caption_v2):
    summary = caption_v2["summary"]
    assert caption_v2["committed_at_kill"] >= 1 and summary["parts"] == 4
    assert summary["parts_skipped"] == caption_v2["committed_at_kill"]  # committed parts are not redone
    table = read_layer(dataset["storage"], "caption", "v2")
    assert sorted(table["clip_id"].to_pylist()) == dataset["good_clips"]  # nothing lost, nothing twice
    ledger = read_ledger(dataset["storage"], "annotations/caption/v2/ledger").to_pylist()
    resumed = [r for r in ledger if r["run_id"] == summary["run_id"]]
    skipped = [r for r in resumed if r["action"] == "skipped"]
    assert len(skipped) == caption_v2["committed_at_kill"] and all("already committed" in r["reason"] for r in skipped)


def test_two_versions_coexist_and_video_shards_are_untouched(dataset, caption_v1, caption_v2):
    storage = dataset["storage"]
    v1, v2 = read_layer(storage, "caption", "v1"), read_layer(storage, "caption", "v2")
    assert sorted(v1["clip_id"].to_pylist()) == sorted(v2["clip_id"].to_pylist())
    m1, m2 = read_layer_meta(storage, "caption", "v1"), read_layer_meta(storage, "caption", "v2")
    assert (m1["producer"]["engine"]["name"], m2["producer"]["engine"]["name"]) == ("vllm", "transformers")
    assert m1["producer_id"] != m2["producer_id"] and m2["status"] == rotten_status(dataset)
    assert read_dataset_json(storage)["layers"]["caption"][:2] == ["v1", "v2"]
    assert fingerprint(dataset["root"]) == dataset["before"]  # shards, index, ingest ledger: byte-identical


@pytest.fixture(scope="module")
def qa_v1(dataset, caption_v1):
    writer = WriterConfig(model=cpu_model(dataset["models"]["text"], "vllm"), sampling=SamplingConfig(max_new_tokens=96),
                          questions_per_family=2, max_text_chars=8, on_overlong="keep")
    config = AnnotateConfig(layer="qa", version="v1", writer=writer, source_layer="caption/v1",
                            pipeline=PipelineConfig(num_gpus=0, num_cpus=1, batch_size=4, videos_per_part=2),
                            ray=RayConfig(progress_bars=False))
    return run_annotate(dataset["root"], config, log=lambda *_: None)


def test_writer_layer_has_a_summary_per_video_and_only_checked_qa(dataset, qa_v1):
    storage = dataset["storage"]
    table = read_layer(storage, "qa", "v1").to_pylist()
    values = [json.loads(r["value"]) for r in table]
    assert all(r["clip_id"] is None and r["value_type"] == "json" for r in table)
    summaries = [r["key"] for r, v in zip(table, values) if v["task"] == "summary"]
    good_keys = {c.split("_")[0] for c in dataset["good_clips"]}
    assert sorted(summaries) == sorted(good_keys)  # one summary per captioned video
    captions = {r["clip_id"]: r for r in read_layer(storage, "caption", "v1").to_pylist()}
    for v in values:
        if v["task"] != "summary":  # kept QA cite real clips of their own video
            assert v["task"] in QA_FAMILIES and v["evidence_clip_ids"]
            assert all(cid in captions for cid in v["evidence_clip_ids"])
    ledger = read_ledger(storage, "annotations/qa/v1/ledger").to_pylist()
    assert [r for r in ledger if r["video_id"] == dataset["rotten"]][0]["reason"] == "no captioned clips"
    assert all(r["reason"] for r in ledger if r["status"] == "failed")
    assert read_layer_meta(storage, "qa", "v1")["recipe"]["source_layer"] == "caption/v1"
    assert read_dataset_json(storage)["layers"]["qa"] == ["v1"]
    assert fingerprint(dataset["root"]) == dataset["before"]


# -- --retry-failed --------------------------------------------------------------------------------
def lone_good_shard(dataset: dict) -> str:
    """The shard holding exactly one video, a good one (so its part is that video alone)."""
    videos = read_videos_index(dataset["storage"]).select(["key", "shard"]).to_pylist()
    by_shard: dict[str, list[str]] = {}
    for v in videos:
        by_shard.setdefault(v["shard"], []).append(v["key"])
    return next(s for s, keys in sorted(by_shard.items()) if len(keys) == 1 and keys[0] != dataset["rotten"])


def part_files(root: str, layer: str, version: str) -> dict[str, tuple[bytes, int]]:
    folder = os.path.join(root, "annotations", layer, version)
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".parquet"):
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[name] = (f.read(), os.stat(path).st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def caption_v3(dataset, caption_v1):
    """A run while one shard file is away (renamed: reads of it fail, deterministically), then
    the file back and ``--retry-failed``."""
    root, shard = dataset["root"], lone_good_shard(dataset)
    config = caption_config(dataset["models"], "transformers", "v3")
    os.rename(os.path.join(root, shard), os.path.join(root, shard + ".away"))
    try:
        first = run_annotate(root, config, log=lambda *_: None)
    finally:
        os.rename(os.path.join(root, shard + ".away"), os.path.join(root, shard))
    before = part_files(root, "caption", "v3")
    failures_before = read_failures(dataset["storage"], "caption", "v3")
    failing_parts = {name for name in before if read_failures(dataset["storage"], "caption", "v3",
                                                               name[: -len(".parquet")]).num_rows}
    retry = run_annotate(root, replace(config, retry_failed=True), log=lambda *_: None)
    return {"first": first, "retry": retry, "shard": shard, "before": before, "failures_before": failures_before,
            "failing_parts": failing_parts, "after": part_files(root, "caption", "v3")}


def test_retry_failed_fills_the_failed_items_and_leaves_the_other_parts_alone(dataset, caption_v3):
    storage, first, retry = dataset["storage"], caption_v3["first"], caption_v3["retry"]
    assert first["failed_videos"] == 2 and first["status"].startswith("complete with")  # the shard away + rotten
    away_part = caption_v3["shard"].rsplit("/", 1)[-1][: -len(".tar")] + "-0000.parquet"
    reasons = caption_v3["failures_before"].to_pylist()
    assert any(r["stage"] == "read" and r["retry"] and r["clip_id"] is None for r in reasons)
    table = read_layer(storage, "caption", "v3")
    assert sorted(table["clip_id"].to_pylist()) == dataset["good_clips"]  # filled, nothing twice
    assert retry["retried_parts"] == 2 and retry["status"] == rotten_status(dataset)  # the rotten clips fail again
    before, after = caption_v3["before"], caption_v3["after"]
    clean = [name for name in before if name not in caption_v3["failing_parts"]]
    assert away_part in caption_v3["failing_parts"] and len(caption_v3["failing_parts"]) == 2  # + the rotten one
    assert clean and all(after[name] == before[name] for name in clean)  # same bytes, same mtime: not rewritten
    assert after[away_part][0] != before[away_part][0]  # rewritten with the captions
    left = read_failures(storage, "caption", "v3")
    assert set(left["key"].to_pylist()) == {dataset["rotten"]} and left.num_rows == len(dataset["rotten_clips"])
    ledger = read_ledger(storage, "annotations/caption/v3/ledger").to_pylist()
    skipped = [r for r in ledger if r["run_id"] == retry["run_id"] and r["action"] == "skipped"]
    assert len(skipped) == len(clean) and all("no failed items" in r["reason"] for r in skipped)


def test_a_kill_mid_retry_leaves_the_old_parts_whole_and_a_rerun_finishes(tmp_path, dataset, caption_v3):
    """The retry CLI SIGKILLs itself (fault point) after planning a part's new rows, before the
    new file replaces the old one; then the same command again without the fault."""
    import yaml

    from longvid.config import to_dict

    config = replace(caption_config(dataset["models"], "transformers", "v3"), retry_failed=True)
    settings = tmp_path / "v3-retry.yaml"
    settings.write_text(yaml.safe_dump(to_dict(config)))
    args = [sys.executable, "-m", "longvid", "annotate", dataset["root"], "--config", str(settings),
            "--ray.address", "local"]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               LONGVID_FAULT=f"annotate-retry-before-replace:{tmp_path / 'fired'}")
    before = part_files(dataset["root"], "caption", "v3")
    for environment in (env, {k: v for k, v in env.items() if k != "LONGVID_FAULT"}):
        child = subprocess.Popen(args, cwd=REPO, env=environment, start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _, err = child.communicate(timeout=300)
        finally:
            try:
                os.killpg(child.pid, signal.SIGKILL)  # the Ray it started, orphaned by the kill
            except ProcessLookupError:
                pass
        if "LONGVID_FAULT" in environment:
            assert child.returncode == -signal.SIGKILL and (tmp_path / "fired").exists(), err[-2000:]
            assert part_files(dataset["root"], "caption", "v3") == before  # every part: same bytes, same mtime
            assert layer_stats(dataset["storage"], "caption", "v3")["status"] == "partial"  # a stopped run
        else:  # only the rotten video was left to retry, and it fails again: exit 1, "every video failed"
            assert child.returncode == 1 and "Traceback" not in err, err[-2000:]
    assert layer_stats(dataset["storage"], "caption", "v3")["status"] == rotten_status(dataset)
    assert sorted(read_layer(dataset["storage"], "caption", "v3")["clip_id"].to_pylist()) == dataset["good_clips"]


def test_retry_failed_needs_a_finished_version(dataset, caption_v1):
    config = replace(caption_config(dataset["models"], "transformers", "never-run"), retry_failed=True)
    with pytest.raises(AnnotateError, match="no run to retry"):
        run_annotate(dataset["root"], config, log=lambda *_: None)


# -- stats -----------------------------------------------------------------------------------------
def test_stats_count_words_coverage_and_failures_by_reason(dataset, caption_v1, qa_v1):
    stats = dataset_stats(dataset["storage"])
    layers = {f"{x['layer']}/{x['version']}": x for x in stats["layers"]}
    v1, qa = layers["caption/v1"], layers["qa/v1"]
    values = read_layer(dataset["storage"], "caption", "v1")["value"].to_pylist()  # bounded: a tiny layer
    assert v1["words"] == sum(len(v.split()) for v in values) > 0
    all_clips = len(dataset["good_clips"]) + len(dataset["rotten_clips"])
    assert v1["clip_share"] == pytest.approx(len(dataset["good_clips"]) / all_clips)
    assert v1["video_share"] == pytest.approx(3 / 4) and qa["clip_share"] is None
    assert v1["failures"] == [{"stage": "decode", "reason": v1["failures"][0]["reason"],
                               "count": len(dataset["rotten_clips"]), "retryable": True}]
    assert "video ended before caption frame N" in v1["failures"][0]["reason"]  # numbers folded: one class
    assert qa["words"] > 0 and stats["layer_words"] == sum(x["words"] for x in stats["layers"])
    text = format_stats(stats)
    assert f"({stats['layer_words']} words in all)" in text and "x decode: video ended" in text
    page = render_html(stats)
    assert "Failures by reason" in page and "clips covered" in page and rotten_status(dataset) in page


# -- no vLLM: auto picks transformers; vllm asked for is one line ----------------------------------
def run_without_vllm(tmp_path, dataset: dict, *extra: str) -> subprocess.CompletedProcess:
    """``longvid annotate`` in a child process where ``import vllm`` fails: a sitecustomize on
    PYTHONPATH sets ``sys.modules['vllm'] = None`` (so ``find_spec`` and ``import`` see no vllm)."""
    site = tmp_path / "no-vllm"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['vllm'] = None\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), REPO, os.environ.get("PYTHONPATH", "")]))
    args = [sys.executable, "-m", "longvid", "annotate", dataset["root"], "--layer", "caption",
            "--captioner", dataset["models"]["vlm"], "--captioner.sampling.max-new-tokens", "8",
            "--captioner.on-overlong", "keep", "--captioner.longest-edge", "64", "--captioner.max-frames", "4",
            "--limit-videos", "1", "--ray.address", "local", "--ray.progress-bars", "false", *extra]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_without_vllm_auto_picks_transformers_and_vllm_is_one_line(tmp_path, dataset, caption_v1):
    done = run_without_vllm(tmp_path, dataset, "--version", "no-vllm")  # defaults: backend auto, num_gpus auto
    assert done.returncode == 0, done.stderr[-2000:]
    assert "using the transformers backend" in done.stdout and "has no GPU" in done.stdout
    meta = read_layer_meta(dataset["storage"], "caption", "no-vllm")
    assert meta["producer"]["engine"]["name"] == "transformers" and meta["status"] == "complete"
    refused = run_without_vllm(tmp_path, dataset, "--version", "no-vllm-2", "--backend", "vllm")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().count("\n") == 0 and "--backend vllm: vllm is not installed" in refused.stderr
