"""The arithmetic of cluster/SIZING.md: measured throughputs + stated assumptions → core-hours,
GPU-hours, storage, egress and a cluster shape. Reads benchmark outputs; never measures or writes.

    python cluster/sizing.py --decode-scale bench/out/decode_scale60/results.json \
        --ingest bench/out/ingest-real720.json --dataset bench/out/sizing-ds \
        [--captions-per-gpu-s X]     # from bench/captioning.py on the GPU machine

Every input is either one of those files or a flag below with its default stated in SIZING.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tarfile
from dataclasses import asdict, dataclass

REAL_720P = "real-like-720p30-2.5M"
REAL_1080P = "real-like-1080p30-5M"


@dataclass
class Assumptions:
    hours: float = 300_000.0  # LongVid's size
    share_1080p: float = 0.5  # share of video time at 1080p (rest 720p): Ego4D, HD-VILA, MiraData are mostly >= 720p
    mbit_720p: float = 2.5  # typical H.264 720p30 bitrate of streaming sites
    mbit_1080p: float = 5.0  # typical H.264 1080p30 bitrate of streaming sites
    audio_kbit: float = 128.0  # AAC track kept in the original bytes
    clip_seconds: float = 15.0  # average clip length after merging (>= 2 s) and splitting (<= 60 s) shots
    days: float = 30.0  # deadline
    utilisation: float = 0.75  # share of the cluster's CPU time spent in stages (start-up, stragglers, retries, spot loss)
    safety: float = 1.5  # per-vCPU speed of the cluster's nodes vs this machine's, unmeasured: assume 1.5x slower
    pod_cpus: int = 30  # Ray CPUs of one CPU worker pod (cluster/kuberay/raycluster.yaml)
    gpu_utilisation: float = 0.8  # share of GPU time spent captioning
    gpus_per_node: int = 8  # p5.48xlarge


def measured(decode_scale: str, ingest: str, dataset: str | None, execution_s: float | None = None) -> dict:
    """The figures taken from benchmark outputs. ``execution_s``: the Ray Data execution time that
    bench/ingest.py's log prints ("execution finished in N seconds"), to leave Ray's start-up out."""
    with open(decode_scale) as f:
        rows = {r["clip"]: r for r in json.load(f)["rows"]}
    with open(ingest) as f:
        ingest_figures = json.load(f)
    if execution_s:
        rate = ingest_figures["video_seconds"] / execution_s
        ingest_figures["ratio_ingest_to_decode"] = rate / ingest_figures["decode_only_video_s_per_s"]
    out = {
        "segment_720p": rows[REAL_720P]["segment_video_s_per_core_s"],
        "segment_1080p": rows[REAL_1080P]["segment_video_s_per_core_s"],
        "segment_no_deblock_720p": rows[REAL_720P]["segment_skip_deblock_video_s_per_core_s"],
        "segment_no_deblock_1080p": rows[REAL_1080P]["segment_skip_deblock_video_s_per_core_s"],
        "decode_720p": rows[REAL_720P]["decode_video_s_per_core_s"],
        "decode_1080p": rows[REAL_1080P]["decode_video_s_per_core_s"],
        "segment_vs_decode_720p": rows[REAL_720P]["segment_vs_decode"],
        "ingest_vs_decode_720p": ingest_figures["ratio_ingest_to_decode"],
        "generated_720p_segment": rows["generated-720p25"]["segment_video_s_per_core_s"],
    }
    if dataset:
        out.update(metadata_per_clip(dataset))
    return out


def metadata_per_clip(dataset: str) -> dict:
    """Bytes of KEY.json per clip in a local dataset's shards (plus the clip count)."""
    import pyarrow.compute as pc

    from longvid.shards import Storage, open_index

    json_bytes = 0
    videos = os.path.join(dataset, "videos")
    for name in sorted(os.listdir(videos)):
        with tarfile.open(os.path.join(videos, name)) as tar:
            json_bytes += sum(m.size for m in tar.getmembers() if m.name.endswith(".json"))
    clips = int(pc.sum(open_index(Storage.for_uri(dataset)).shards["clips"]).as_py() or 0)
    return {"json_bytes_per_clip": json_bytes / clips, "sample_clips": clips}


def plan(m: dict, a: Assumptions, captions_per_gpu_s: float | None) -> dict:
    efficiency = m["ingest_vs_decode_720p"] / m["segment_vs_decode_720p"]  # Ray pipeline vs its segment stage
    rate_720, rate_1080 = m["segment_720p"] * efficiency, m["segment_1080p"] * efficiency
    cpu_s_per_video_s = (1 - a.share_1080p) / rate_720 + a.share_1080p / rate_1080
    video_s = a.hours * 3600
    core_hours = video_s * cpu_s_per_video_s / 3600
    wall_h = a.days * 24
    vcpus = core_hours * a.safety / (wall_h * a.utilisation)
    pods = math.ceil(vcpus / a.pod_cpus)
    prep_cpu_s = (1 - a.share_1080p) / m["decode_720p"] + a.share_1080p / m["decode_1080p"]
    mbit = (1 - a.share_1080p) * a.mbit_720p + a.share_1080p * a.mbit_1080p + a.audio_kbit / 1000
    video_bytes = video_s * mbit * 1e6 / 8
    clips = video_s / a.clip_seconds
    out = {
        "pipeline_efficiency": efficiency, "ingest_720p_per_core": rate_720, "ingest_1080p_per_core": rate_1080,
        "ingest_mix_per_core": 1 / cpu_s_per_video_s, "core_hours": core_hours, "vcpus_30d": vcpus, "cpu_pods": pods,
        "days_with_pods": core_hours * a.safety / (pods * a.pod_cpus * a.utilisation) / 24,
        "caption_prep_core_hours_floor": video_s * prep_cpu_s / 3600,
        "mbit_mix": mbit, "video_tb": video_bytes / 1e12, "clips": clips,
        "metadata_gb": clips * m.get("json_bytes_per_clip", float("nan")) / 1e9,
        "shards_2gib": video_bytes / 2**31, "mb_per_s_30d": video_bytes / (wall_h * 3600) / 1e6,
        "gpu_hours_times_rate": clips / 3600,  # GPU-hours = this / captions per GPU-second
    }
    if captions_per_gpu_s:
        out["gpu_hours"] = clips / captions_per_gpu_s / 3600
        out["gpus_30d"] = out["gpu_hours"] / (wall_h * a.gpu_utilisation)
        out["gpu_nodes_30d"] = math.ceil(out["gpus_30d"] / a.gpus_per_node)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decode-scale", required=True, help="results.json of bench/decode_scale.py")
    parser.add_argument("--ingest", required=True, help="--json output of bench/ingest.py on real-like 720p clips")
    parser.add_argument("--dataset", help="a local dataset ingested from real-like clips (metadata bytes per clip)")
    parser.add_argument("--ingest-execution-s", type=float,
                        help="Ray Data execution seconds from bench/ingest.py's log (leaves Ray start-up out)")
    parser.add_argument("--skip-deblock", action="store_true",
                        help="size with segment.decode.skip_loop_filter on (the measured no-deblock rates)")
    parser.add_argument("--captions-per-gpu-s", type=float, help="from bench/captioning.py on one GPU (placeholder until measured)")
    for name, value in asdict(Assumptions()).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = parser.parse_args(argv)
    assumptions = Assumptions(**{k: getattr(args, k) for k in asdict(Assumptions())})
    m = measured(args.decode_scale, args.ingest, args.dataset, args.ingest_execution_s)
    if args.skip_deblock:
        m["segment_720p"], m["segment_1080p"] = m["segment_no_deblock_720p"], m["segment_no_deblock_1080p"]
    result = plan(m, assumptions, args.captions_per_gpu_s)
    json.dump({"measured": m, "assumptions": asdict(assumptions), "plan": result}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
