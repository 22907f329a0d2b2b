"""The cluster manifests (cluster/) against the code they run: every YAML parses, every entrypoint
is a real ``longvid`` command with real flags, every ``--config`` file loads into that command's
config dataclass, the stage resources fit the worker groups, /dev/shm holds the object store, and
no secret is written into a file. No Kubernetes, AWS or Ray cluster is needed: the manifests are
checked as data, and each checker is also shown to reject a broken copy.
"""

from __future__ import annotations

import copy
import functools
import importlib
import json
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from longvid.cli import build_parser
from longvid.config import build_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAY_UP = CLUSTER / "aws" / "longvid-aws.yaml"
RAYJOBS = sorted((CLUSTER / "kuberay").glob("rayjob-*.yaml"))

# command → (module, config dataclass) that its --config file must load into.
# `annotate` comes with the annotation branch: its names must be re-checked after that merge.
COMMAND_CONFIGS = {
    "ingest": ("longvid.pipelines.ingest", "IngestConfig"),
    "annotate": ("longvid.pipelines.annotate", "AnnotateConfig"),
}
# actor pools: (section, pool-size key) → {Ray resource: (section, per-actor key)}
ACTOR_POOLS = {
    ("stages.write", "actors"): {"CPU": ("stages.write", "num_cpus")},
    ("pipeline", "pool_size"): {"CPU": ("pipeline", "num_cpus"), "GPU": ("pipeline", "num_gpus")},
    ("caption.pipeline", "pool_size"): {"CPU": ("caption.pipeline", "num_cpus"), "GPU": ("caption.pipeline", "num_gpus")},
}
# EC2 instance types used by the `ray up` config: (vCPUs, memory GiB, GPUs)
INSTANCE_TYPES = {"m7i.2xlarge": (8, 32, 0), "m7i.8xlarge": (32, 128, 0), "p5.48xlarge": (192, 2048, 8)}
MAX_STORE_SHARE = 0.6  # object store (or /dev/shm) at most this share of a pod's / node's memory
SHM_RULE = "--object-store-memory=$(( $(df -B1 --output=size /dev/shm | tail -1) * 9 / 10 ))"


# -- helpers ---------------------------------------------------------------------------------------

def load(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def quantity_bytes(text) -> int:
    """A Kubernetes memory quantity ("42Gi", "2G", "512Mi", 1024) in bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTE]i?)?", str(text))
    if not match:
        raise ValueError(f"not a memory quantity: {text!r}")
    units = {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20,
             "Gi": 2**30, "Ti": 2**40}
    return int(float(match.group(1)) * units[match.group(2)])


def docker_bytes(text: str) -> int:
    """A docker size ("44g", "512m") in bytes (docker's units are binary)."""
    match = re.fullmatch(r"(\d+)([bkmg]?)", text.lower())
    if not match:
        raise ValueError(f"not a docker size: {text!r}")
    return int(match.group(1)) * {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match.group(2)]


def ray_groups(cluster: dict) -> dict[str, dict]:
    """Group name ("head" for the head) → its spec, from a RayCluster manifest."""
    spec = cluster["spec"]
    groups = {"head": spec["headGroupSpec"]}
    groups.update({g["groupName"]: g for g in spec["workerGroupSpecs"]})
    return groups


def ray_container(group: dict) -> dict:
    containers = group["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"].startswith("ray-"))


def group_resources(group: dict) -> dict[str, float]:
    """The Ray resources one pod of a group declares: CPU, GPU and custom ones."""
    params = group.get("rayStartParams", {})
    limits = ray_container(group)["resources"]["limits"]
    out = {"CPU": float(params.get("num-cpus", limits["cpu"])),
           "GPU": float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))}
    if "resources" in params:  # KubeRay's quoting: '"{\"name\": 1}"'
        out.update(json.loads(json.loads(params["resources"])))
    return out


def node_type_resources(node_type: dict) -> dict[str, float]:
    return {"GPU": 0.0, **{k: float(v) for k, v in node_type["resources"].items()}}


def longvid_argv(command: str) -> list[str]:
    """The arguments after ``python -m longvid`` / ``longvid`` in a shell command, up to a shell operator."""
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word == "longvid" and i == 0 or word == "longvid" and words[i - 1] == "-m":
            argv = words[i + 1:]
            break
    else:
        raise ValueError(f"not a longvid command: {command!r}")
    for j, word in enumerate(argv):
        if word in ("|", "&&", "||", ";", ">", ">>"):
            return argv[:j]
    return argv


def config_option(parser, argv: list[str]):
    """(parsed args, the --config file given or None) for a longvid command line.

    Commands name the option's destination differently (``config``, ``config_file``): it is found
    by parsing again with a marker as the value and seeing which attribute holds it.
    """
    args = parser.parse_args(argv)
    if "--config" not in argv:
        return args, None
    marked = list(argv)
    marked[argv.index("--config") + 1] = marker = "<config-marker>"
    dest = next(k for k, v in vars(parser.parse_args(marked)).items() if v == marker)
    return args, getattr(args, dest)


def config_class(command: str):
    module, name = COMMAND_CONFIGS[command]
    return getattr(importlib.import_module(module), name)


@functools.lru_cache(maxsize=1)
def cli_parser():
    return build_parser()  # builds every command's parser (imports the pipelines): once per session


def check_command(argv: list[str]) -> list[str]:
    """Problems with one longvid command line: unknown command or flag, missing or bad --config."""
    parser = cli_parser()
    try:
        args, config_path = config_option(parser, argv)
    except SystemExit:
        return [f"`longvid {shlex.join(argv)}` does not parse (unknown command or flag)"]
    if config_path is None:
        return []
    path = ROOT / config_path  # jobs run in the shipped working_dir: the repository root
    if not path.is_file():
        return [f"--config {config_path}: no such file in the repository"]
    try:
        build_config(config_class(argv[0]), args, str(path))
    except Exception as exc:  # ConfigError or a type error: either way the job would stop at start
        return [f"--config {config_path} does not load into {COMMAND_CONFIGS[argv[0]][1]}: {exc}"]
    return []


def rayjob_commands() -> dict[str, list[str]]:
    return {p.name: longvid_argv(load(p)["spec"]["entrypoint"]) for p in RAYJOBS}


def readme_commands(path: Path) -> list[str]:
    """Shell lines in fenced code blocks that run longvid (continuation lines joined)."""
    text = path.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if re.search(r"(^|python -m )longvid ", line):
                commands.append(line[line.index("python -m longvid") if "python -m longvid" in line else 0:])
    return commands


def stage_configs() -> dict[str, dict]:
    """The --config files the jobs pass, by command (read as YAML: the resource checks do not need
    the command to exist yet)."""
    out = {}
    for argv in rayjob_commands().values():
        if "--config" in argv:
            out[argv[0]] = load(ROOT / argv[argv.index("--config") + 1])
    return out


def resource_requests(config: dict, where: str = "") -> list[tuple[str, str, float]]:
    """(setting, Ray resource, amount per task/actor) of every *_cpus / *_gpus / custom_resources key."""
    out = []
    for key, value in config.items():
        name = f"{where}{key}"
        if isinstance(value, dict):
            if key == "custom_resources":
                out += [(f"{name}.{k}", k, float(v)) for k, v in value.items()]
            else:
                out += resource_requests(value, f"{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if key.endswith("_cpus"):
                out.append((name, "CPU", float(value)))
            elif key.endswith("_gpus"):
                out.append((name, "GPU", float(value)))
    return [r for r in out if not r[0].startswith("ray.")]  # ray.num_cpus sizes a local Ray, not a stage


def section_of(config: dict, dotted: str) -> dict:
    for part in dotted.split("."):
        config = config.get(part) or {}
    return config


def check_resources(config: dict, pods: dict[str, dict], maxima: dict[str, int]) -> list[str]:
    """Every resource a stage asks for exists on some worker group, one task/actor fits one pod, and
    each actor pool fits the cluster at its maximum size (else Ray Data waits for it forever)."""
    problems = []
    for setting, resource, amount in resource_requests(config):
        if amount <= 0:
            continue
        if not any(res.get(resource, 0) >= amount for res in pods.values()):
            declared = sorted({k for res in pods.values() for k, v in res.items() if v > 0})
            problems.append(f"{setting} asks for {amount:g} {resource}; no worker group has that much "
                            f"(declared: {declared})")
    for (section, size_key), per_actor in ACTOR_POOLS.items():
        size = section_of(config, section).get(size_key)
        if size is None:
            continue
        for resource, (sec, key) in per_actor.items():
            amount = float(section_of(config, sec)[key])
            capacity = sum(res.get(resource, 0) * maxima[name] for name, res in pods.items())
            # CPU actors share the CPUs with the tasks that feed them: a pool holding most of them starves
            # its own input (seen on a 2-CPU machine: 8 one-CPU writers, no CPU left to decode, no progress)
            usable = capacity / 2 if resource == "CPU" else capacity
            if size * amount > usable:
                problems.append(f"{section}.{size_key}={size} actors x {amount:g} {resource} exceeds "
                                f"{usable:g} {resource} ({'half of ' if resource == 'CPU' else ''}the cluster's "
                                f"{capacity:g} at maximum size)")
    for section, captioner in (("pipeline", config.get("captioner")),
                               ("caption.pipeline", config.get("caption", {}).get("captioner"))):
        tp = (captioner or {}).get("model", {}).get("tensor_parallel_size")
        gpus = section_of(config, section).get("num_gpus")
        if tp is not None and gpus is not None and str(gpus) != "auto" and float(gpus) != float(tp):
            problems.append(f"{section}.num_gpus={gpus} must equal the captioner's tensor_parallel_size={tp} "
                            "(one engine per actor)")
    return problems


def kuberay_pods(cluster: dict) -> tuple[dict[str, dict], dict[str, int]]:
    workers = {n: g for n, g in ray_groups(cluster).items() if n != "head"}
    return {n: group_resources(g) for n, g in workers.items()}, {n: int(g["maxReplicas"]) for n, g in workers.items()}


def ray_up_pods(config: dict) -> tuple[dict[str, dict], dict[str, int]]:
    types = {n: t for n, t in config["available_node_types"].items() if n != config["head_node_type"]}
    return {n: node_type_resources(t) for n, t in types.items()}, {n: int(t.get("max_workers", 0)) for n, t in types.items()}


def check_kuberay_memory(cluster: dict) -> list[str]:
    """/dev/shm is a memory emptyDir at least as large as the object store, and both leave room."""
    problems = []
    for name, group in ray_groups(cluster).items():
        store = int(group["rayStartParams"]["object-store-memory"])
        container = ray_container(group)
        limit = quantity_bytes(container["resources"]["limits"]["memory"])
        mount = next((m for m in container.get("volumeMounts", []) if m["mountPath"] == "/dev/shm"), None)
        volume = next((v for v in group["template"]["spec"].get("volumes", []) if mount and v["name"] == mount["name"]), None)
        if volume is None or volume.get("emptyDir", {}).get("medium") != "Memory":
            problems.append(f"{name}: no memory-backed emptyDir mounted at /dev/shm (docker's default is 64 MB)")
            continue
        shm = quantity_bytes(volume["emptyDir"]["sizeLimit"])
        if shm < store:
            problems.append(f"{name}: /dev/shm {shm / 2**30:.1f} GiB < object store {store / 2**30:.1f} GiB")
        if store > MAX_STORE_SHARE * limit:
            problems.append(f"{name}: object store {store / 2**30:.1f} GiB > {MAX_STORE_SHARE:.0%} of the "
                            f"{limit / 2**30:.0f} GiB memory limit (/dev/shm counts against it)")
    return problems


def shm_option(options: list[str]) -> int | None:
    sizes = [docker_bytes(o.split("=", 1)[1]) for o in options if o.startswith("--shm-size=")]
    return sizes[-1] if sizes else None


def check_ray_up_memory(config: dict) -> list[str]:
    """Each node's /dev/shm (docker --shm-size) fits its instance and the object store is derived from it."""
    problems = []
    for commands in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[commands] if "ray start" in c]
        if not start or any(SHM_RULE not in " ".join(c.split()) for c in start):
            problems.append(f"{commands}: ray start must size the object store from /dev/shm ({SHM_RULE})")
    docker = config["docker"]
    for name, node_type in config["available_node_types"].items():
        if name == config["head_node_type"]:
            options = docker.get("run_options", []) + docker.get("head_run_options", [])
        else:
            options = docker.get("run_options", []) + node_type.get("docker", {}).get("worker_run_options", [])
        shm = shm_option(options)
        instance = node_type["node_config"]["InstanceType"]
        if instance not in INSTANCE_TYPES:
            problems.append(f"{name}: instance type {instance} unknown to this test: add its size to INSTANCE_TYPES")
            continue
        vcpus, memory_gib, gpus = INSTANCE_TYPES[instance]
        if shm is None:
            problems.append(f"{name}: no --shm-size (Ray would guess from free memory at start)")
        elif shm > MAX_STORE_SHARE * memory_gib * 2**30:
            problems.append(f"{name}: --shm-size {shm / 2**30:.0f} GiB > {MAX_STORE_SHARE:.0%} of {instance}'s {memory_gib} GiB")
        res = node_type_resources(node_type)
        if res.get("CPU", 0) > vcpus or res.get("GPU", 0) != gpus:
            problems.append(f"{name}: resources {node_type['resources']} do not match {instance} ({vcpus} vCPU, {gpus} GPU)")
    return problems


# -- every file parses -------------------------------------------------------------------------------

def test_every_yaml_in_cluster_parses_safely():
    files = sorted(CLUSTER.rglob("*.yaml"))
    assert {RAYCLUSTER, RAY_UP, CLUSTER / "longvid.yaml", CLUSTER / "annotate.yaml"} <= set(files)
    assert len(RAYJOBS) == 2, RAYJOBS
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), f"{path}: expected YAML mappings"
    for job in RAYJOBS:
        runtime_env = yaml.safe_load(load(job)["spec"]["runtimeEnvYAML"])
        assert isinstance(runtime_env, dict), job


# -- entrypoints are real commands -------------------------------------------------------------------

def test_rayjobs_run_ingest_and_annotate():
    assert sorted(argv[0] for argv in rayjob_commands().values()) == ["annotate", "ingest"]


@pytest.mark.parametrize("job", [p.name for p in RAYJOBS])
def test_rayjob_entrypoint_is_a_real_command_with_a_loadable_config(job):
    argv = rayjob_commands()[job]
    assert "--config" in argv, f"{job}: the stage settings must come from a --config file"
    assert check_command(argv) == []


def test_readme_commands_are_real_commands():
    commands = readme_commands(CLUSTER / "README.md")
    assert any(" ingest " in c for c in commands) and any(" annotate " in c for c in commands), commands
    problems = [p for c in commands for p in check_command(longvid_argv(c))]
    assert problems == []


def test_command_check_rejects_unknown_flags_commands_and_configs(tmp_path):
    good = ["ingest", "s3://b/m.parquet", "--out", "s3://b/d", "--config", "cluster/longvid.yaml"]
    assert check_command(good) == []
    assert check_command(good + ["--segment.no-such-setting", "1"])
    assert check_command(["ingestt", "m", "--out", "d"])
    assert check_command(good[:-1] + ["cluster/no-such.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**load(CLUSTER / "longvid.yaml"), "stages": {"decode": {"num_cpus": 1}}}))
    assert "does not load" in check_command(good[:-1] + [str(bad)])[0]


def test_runtime_env_ships_the_project():
    for job in RAYJOBS:
        spec = load(job)["spec"]
        runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
        working_dir = runtime_env.get("working_dir", "")
        assert working_dir.endswith(".zip") and re.match(r"(s3|https|gs)://", working_dir) or runtime_env.get("pip"), \
            f"{job.name}: ship the project as a remote working_dir zip or a pip package"
        assert spec["clusterSelector"]["ray.io/cluster"] == load(RAYCLUSTER)["metadata"]["name"]


# -- resources -------------------------------------------------------------------------------------

def test_cluster_has_a_head_a_cpu_group_and_a_gpu_group_with_autoscaling_bounds():
    cluster = load(RAYCLUSTER)
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    pods, maxima = kuberay_pods(cluster)
    assert sorted(res["GPU"] > 0 for res in pods.values()) == [False, True], pods
    for name, group in ray_groups(cluster).items():
        container = ray_container(group)
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert limits == requests, f"{name}: Ray sizes itself from limits; requests must equal them"
        if name == "head":
            assert float(group["rayStartParams"]["num-cpus"]) == 0, "the head runs the drivers, not tasks"
            continue
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"] and group["maxReplicas"] > 0
        res = group_resources(group)
        assert res["CPU"] == float(limits["cpu"]), f"{name}: num-cpus must equal the CPU limit"
        assert res["GPU"] == float(limits.get("nvidia.com/gpu", 0)), f"{name}: num-gpus must equal the GPU limit"
    ray_up = load(RAY_UP)
    up_pods, _ = ray_up_pods(ray_up)
    assert sorted(res["GPU"] > 0 for res in up_pods.values()) == [False, True], "ray up: the same two node types"
    assert float(ray_up["available_node_types"][ray_up["head_node_type"]]["resources"]["CPU"]) == 0


@pytest.mark.parametrize("deployment", ["kuberay", "ray-up"])
def test_stage_resources_exist_on_the_worker_groups(deployment):
    pods, maxima = kuberay_pods(load(RAYCLUSTER)) if deployment == "kuberay" else ray_up_pods(load(RAY_UP))
    configs = stage_configs()
    assert set(configs) == {"ingest", "annotate"}
    problems = [p for c in configs.values() for p in check_resources(c, pods, maxima)]
    assert problems == []


def test_resource_check_rejects_what_no_group_provides():
    pods, maxima = kuberay_pods(load(RAYCLUSTER))
    ingest, annotate = stage_configs()["ingest"], stage_configs()["annotate"]
    too_big = copy.deepcopy(ingest)
    too_big["stages"]["segment"]["num_cpus"] = 64
    assert check_resources(too_big, pods, maxima)
    custom = copy.deepcopy(annotate)
    custom["pipeline"]["custom_resources"] = {"h100_node": 1}
    assert "h100_node" in check_resources(custom, pods, maxima)[0]
    pool = copy.deepcopy(annotate)
    pool["pipeline"]["pool_size"] = 1000
    assert "exceeds" in check_resources(pool, pods, maxima)[0]
    tp = copy.deepcopy(annotate)
    tp["captioner"]["model"]["tensor_parallel_size"] = 2
    assert check_resources(tp, pods, maxima)


def test_object_store_fits_the_largest_fetch_and_writer_batches():
    """A CPU pod must hold a max-size video in and out of a stage, and a writer's batch in memory."""
    ingest = stage_configs()["ingest"]
    max_video = ingest["fetch"]["max_bytes"]
    for name, group in ray_groups(load(RAYCLUSTER)).items():
        if name == "head" or group_resources(group)["GPU"] > 0:
            continue
        store = int(group["rayStartParams"]["object-store-memory"])
        memory = quantity_bytes(ray_container(group)["resources"]["limits"]["memory"])
        assert store >= 2 * max_video, f"{name}: object store below 2 x fetch.max_bytes"
        assert ingest["shards"]["max_videos"] * max_video <= memory - store, f"{name}: a writer batch cannot fit"
        scratch = next(v for v in group["template"]["spec"]["volumes"] if v["name"] == "scratch")
        in_flight = ingest["stages"]["write"]["actors"] * ingest["shards"]["max_bytes"]
        assert quantity_bytes(scratch["emptyDir"]["sizeLimit"]) >= in_flight, f"{name}: scratch < writers x shard size"


# -- shared memory -----------------------------------------------------------------------------------

def test_kuberay_dev_shm_holds_the_object_store():
    assert check_kuberay_memory(load(RAYCLUSTER)) == []


def test_kuberay_memory_check_rejects_a_small_or_missing_shm():
    cluster = load(RAYCLUSTER)
    small = copy.deepcopy(cluster)
    worker = small["spec"]["workerGroupSpecs"][0]
    next(v for v in worker["template"]["spec"]["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"] = "1Gi"
    assert "/dev/shm" in check_kuberay_memory(small)[0]
    missing = copy.deepcopy(cluster)
    ray_container(missing["spec"]["headGroupSpec"])["volumeMounts"] = []
    assert "no memory-backed emptyDir" in check_kuberay_memory(missing)[0]


def test_ray_up_config_is_valid_for_the_autoscaler_and_sizes_shm():
    import jsonschema
    import ray.autoscaler

    config = load(RAY_UP)
    with open(Path(ray.autoscaler.__file__).parent / "ray-schema.json") as f:
        jsonschema.validate(config, json.load(f))  # Ray's own schema for `ray up` configs
    assert config["head_node_type"] in config["available_node_types"]
    assert sum(t.get("min_workers", 0) for t in config["available_node_types"].values()) <= config["max_workers"]
    assert check_ray_up_memory(config) == []
    broken = copy.deepcopy(config)
    broken["available_node_types"]["cpu-worker"]["docker"]["worker_run_options"] = ["--shm-size=120g"]
    broken["worker_start_ray_commands"] = ["ray start --address=$RAY_HEAD_IP:6379"]
    assert len(check_ray_up_memory(broken)) == 2


# -- images and secrets ------------------------------------------------------------------------------

def test_images_and_ray_versions_agree():
    cluster, ray_up = load(RAYCLUSTER), load(RAY_UP)
    version = cluster["spec"]["rayVersion"]
    images = [ray_container(g)["image"] for g in ray_groups(cluster).values()]
    images += [ray_up["docker"]["image"]] + [t["docker"]["worker_image"] for t in ray_up["available_node_types"].values() if "docker" in t]
    assert all(image.split(":")[1].startswith(version + "-") for image in images), images
    dockerfile = (CLUSTER / "docker" / "Dockerfile").read_text()
    assert f"ray[data,default]=={version}" in dockerfile and f"rayproject/ray:{version}-" in dockerfile


def test_image_installs_every_project_dependency():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # tomllib is 3.11+; the project supports 3.10
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    dependencies = re.findall(r'^\s*"([^"]+)"', block, re.M)
    assert len(dependencies) >= 5, dependencies
    dockerfile = (CLUSTER / "docker" / "Dockerfile").read_text().lower()
    names = [re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower() for d in dependencies]
    assert [n for n in names if f'"{n}' not in dockerfile] == []


SECRET_VALUE = re.compile(r"AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|(aws_secret_access_key|aws_session_token)\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{16,}", re.I)


def test_no_secret_values_in_cluster_files():
    for path in CLUSTER.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            assert not SECRET_VALUE.search(path.read_text(encoding="utf-8")), f"{path}: looks like a credential"
    for path in [RAYCLUSTER, *RAYJOBS]:
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc.get("kind") != "Secret", f"{path}: create the Secret with kubectl, never commit it"


def test_every_ray_pod_takes_s3_credentials_from_the_secret():
    for name, group in ray_groups(load(RAYCLUSTER)).items():
        container = ray_container(group)
        assert {"secretRef": {"name": "longvid-s3"}} in container.get("envFrom", []), name
        for env in container.get("env", []):
            if re.search(r"KEY|SECRET|TOKEN|PASSWORD", env["name"]):
                assert "secretKeyRef" in env.get("valueFrom", {}), f"{name}: {env['name']} must come from a Secret"


def test_decode_threads_match_the_segment_cpu_share():
    """FFmpeg's default (0) starts a thread per visible core in every task: 30 tasks x 16 threads."""
    ingest = stage_configs()["ingest"]
    threads = ingest["segment"]["decode"]["threads"]
    assert 1 <= threads <= max(1, round(ingest["stages"]["segment"]["num_cpus"])), threads
