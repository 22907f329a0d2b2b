"""Generated test videos with known ground truth (cuts and their frame numbers).

Used by the tests, the demo and the benchmarks. Each scene is a distinct textured background
with a moving square, so consecutive frames inside a scene differ a little and frames across a
cut differ a lot. Never used on real data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import av
import numpy as np

from .annotators.base import Stage

# codec name → (container extension, PyAV pixel format)
CODECS = {
    "h264": ("mp4", "yuv420p"),
    "hevc": ("mkv", "yuv420p"),
    "vp9": ("webm", "yuv420p"),
    "mpeg4": ("avi", "yuv420p"),
}
ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "mpeg4": "mpeg4"}


@dataclass
class SyntheticVideo:
    path: str
    fps: int
    num_frames: int
    cuts: list[int] = field(default_factory=list)  # first frame of each new shot

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def scene_frame(scene: int, t: int, width: int, height: int) -> np.ndarray:
    """Frame ``t`` of scene ``scene``: a per-scene gradient and colour, and a moving square."""
    rng = np.random.default_rng(scene * 7919 + 17)
    base = rng.integers(30, 225, size=3)
    yy, xx = np.mgrid[0:height, 0:width]
    angle = rng.uniform(0, np.pi)
    grad = (np.cos(angle) * xx / width + np.sin(angle) * yy / height) * 80.0
    img = np.clip(base[None, None, :] + grad[..., None] * (rng.uniform(-1, 1, size=3)), 0, 255)
    size = max(4, height // 5)
    x = int((t * 3 + scene * 11) % max(1, width - size))
    y = int((t * 2 + scene * 5) % max(1, height - size))
    img[y : y + size, x : x + size] = 255 - base
    return img.astype(np.uint8)


def write_video(
    path: str,
    shot_lengths: list[int],
    fps: int = 25,
    width: int = 160,
    height: int = 96,
    codec: str = "h264",
    gop: int | None = None,
    with_audio: bool = False,
) -> SyntheticVideo:
    """Encode a video made of shots of the given lengths (in frames); returns its truth."""
    encoder = ENCODERS[codec]
    container = av.open(path, mode="w")
    stream = container.add_stream(encoder, rate=fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = CODECS[codec][1]
    if gop is not None:
        stream.codec_context.gop_size = gop
    if codec == "hevc":
        stream.options = {"x265-params": "log-level=error"}
    audio = None
    if with_audio:
        audio = container.add_stream("aac", rate=16000)
    cuts, t_global = [], 0
    for scene, length in enumerate(shot_lengths):
        if scene > 0:
            cuts.append(t_global)
        for t in range(length):
            frame = av.VideoFrame.from_ndarray(scene_frame(scene, t, width, height), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            t_global += 1
    for packet in stream.encode():
        container.mux(packet)
    if audio is not None:
        _write_tone(container, audio, seconds=t_global / fps)
    container.close()
    return SyntheticVideo(path=path, fps=fps, num_frames=t_global, cuts=cuts)


def _write_tone(container, audio_stream, seconds: float, rate: int = 16000) -> None:
    samples = np.sin(np.arange(int(seconds * rate)) * 2 * np.pi * 440 / rate).astype(np.float32)
    chunk = 1024
    for i in range(0, len(samples), chunk):
        part = samples[i : i + chunk]
        frame = av.AudioFrame.from_ndarray(part[None, :], format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = i
        for packet in audio_stream.encode(frame):
            container.mux(packet)
    for packet in audio_stream.encode():
        container.mux(packet)


def write_audio_only(path: str, seconds: float = 2.0) -> None:
    container = av.open(path, mode="w")
    audio = container.add_stream("aac", rate=16000)
    _write_tone(container, audio, seconds)
    container.close()


def write_image(path: str, width: int = 64, height: int = 48) -> None:
    """A single PNG picture (to be renamed .mp4 by tests of bad input)."""
    container = av.open(path, mode="w", format="image2")
    stream = container.add_stream("png", rate=1)
    stream.width, stream.height, stream.pix_fmt = width, height, "rgb24"
    frame = av.VideoFrame.from_ndarray(scene_frame(0, 0, width, height), format="rgb24")
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


# -- scripted videos: gradual transitions and distractors ----------------------------------------
#
# A script is a list of shots (each with its own camera/object motion and optional flashes) and
# the transitions between them (cut, dissolve, fades through black). The truth records every
# transition as a frame span and every distractor (pan, fast motion, flash, static) as a span
# where a detector must stay quiet.

MOTIONS = ("static", "drift", "pan", "fast_pan", "zoom", "fast_object", "shake")
TRANSITIONS = ("cut", "dissolve", "fade", "fade_out", "fade_in")
DISTRACTOR_MOTIONS = {"static", "pan", "fast_pan", "zoom", "fast_object", "shake"}


@dataclass
class ShotSpec:
    length: int  # frames of the shot, excluding frames it shares with a dissolve
    motion: str = "drift"  # one of MOTIONS
    flashes: tuple[int, ...] = ()  # offsets (in the shot) where a 1-3 frame flash starts
    seed: int = 0  # picks the scene's texture, colours and motion directions


@dataclass
class TransitionSpec:
    kind: str = "cut"  # one of TRANSITIONS
    length: int = 0  # frames of a gradual transition (dissolve overlap; a fade's whole dip)


@dataclass
class ScriptedVideo(SyntheticVideo):
    """``cuts``: first frame of each new shot (a gradual transition's middle frame).
    ``transitions``: ``{"start_frame", "end_frame", "kind"}``, half-open; a cut has no frames of
    its own (start == end == its cut). ``distractors``: spans where no boundary may be found."""

    transitions: list[dict] = field(default_factory=list)
    distractors: list[dict] = field(default_factory=list)


def periodic_texture(rng: np.random.Generator, height: int, width: int, slope: float = 2.2) -> np.ndarray:
    """A tileable 1/f^slope noise field in [0, 1] (natural images have roughly this spectrum)."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0
    amplitude = radius ** (-slope / 2.0)
    amplitude[0, 0] = 0.0
    phase = rng.uniform(0, 2 * np.pi, size=amplitude.shape)
    field_ = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(height, width))
    field_ -= field_.min()
    return field_ / max(float(field_.max()), 1e-9)


def scene_canvas(seed: int, height: int, width: int) -> np.ndarray:
    """A tileable ``height``x``width`` RGB scene: coloured textures plus a few hard-edged shapes."""
    rng = np.random.default_rng(seed * 104729 + 3)
    palette = rng.uniform(20, 235, size=(3, 3))  # three colours mixed by two texture fields
    a = periodic_texture(rng, height, width, slope=1.8)[..., None]
    b = periodic_texture(rng, height, width, slope=1.6)[..., None]
    img = palette[0] * (1 - a) + palette[1] * a
    img = img * (1 - 0.5 * b) + palette[2] * 0.5 * b
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(int(rng.integers(3, 8))):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.04, 0.2) * height, rng.uniform(0.04, 0.2) * width
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1 if rng.random() < 0.5 else (
            (abs(yy - cy) < ry) & (abs(xx - cx) < rx))
        img[mask] = rng.uniform(0, 255, size=3)
    return np.clip(img, 0, 255).astype(np.uint8)


class ShotRenderer:
    """Frames of one shot: a camera window moving over a tileable scene, plus a moving object."""

    def __init__(self, spec: ShotSpec, width: int, height: int):
        if spec.motion not in MOTIONS:
            raise ValueError(f"unknown motion {spec.motion!r}; known: {MOTIONS}")
        self.spec, self.width, self.height = spec, width, height
        rng = np.random.default_rng(spec.seed * 7907 + 11)
        self.rng = rng
        self.canvas = scene_canvas(spec.seed, height * 2, width * 2)
        angle = rng.uniform(0, 2 * np.pi)
        speed = {"static": 0.0, "drift": 0.002, "pan": 0.012, "fast_pan": 0.04, "zoom": 0.0,
                 "fast_object": 0.002, "shake": 0.0}[spec.motion] * width
        self.velocity = (speed * np.sin(angle), speed * np.cos(angle))
        self.origin = (rng.uniform(0, height), rng.uniform(0, width))
        self.object_colour = rng.uniform(0, 255, size=3)
        self.object_speed = (0.06 if spec.motion == "fast_object" else 0.01) * width
        self.noise = [rng.normal(0, 2.0, size=(height, width, 3)).astype(np.float32) for _ in range(4)]
        self.flash_frames = {}
        for start in spec.flashes:
            strengths = [(0.9,), (0.85, 0.45), (0.7, 0.5, 0.25)][int(rng.integers(0, 3))]
            for k, s in enumerate(strengths):
                self.flash_frames[start + k] = s

    def _window(self, t: int) -> np.ndarray:
        h, w = self.height, self.width
        y0 = self.origin[0] + self.velocity[0] * t
        x0 = self.origin[1] + self.velocity[1] * t
        if self.spec.motion == "shake":
            y0 += self.rng.normal(0, 0.03) * h
            x0 += self.rng.normal(0, 0.03) * w
        if self.spec.motion == "zoom":
            scale = 1.0 + 0.6 * t / max(1, self.spec.length)  # up to a 1.6x zoom-in over the shot
            ch, cw = int(2 * h / (1 + scale) * 1.0), int(2 * w / (1 + scale) * 1.0)
        else:
            ch, cw = h, w
        rows = (int(y0) + np.arange(ch)) % self.canvas.shape[0]
        cols = (int(x0) + np.arange(cw)) % self.canvas.shape[1]
        crop = self.canvas[rows[:, None], cols[None, :]]
        if (ch, cw) != (h, w):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(crop), format="rgb24")
            crop = frame.reformat(width=w, height=h, interpolation="BILINEAR").to_ndarray()
        return crop

    def frame(self, t: int) -> np.ndarray:
        h, w = self.height, self.width
        img = self._window(t).astype(np.float32)
        size = int(h * (0.35 if self.spec.motion == "fast_object" else 0.2))
        span_x, span_y = max(1, w - size), max(1, h - size)
        x = int(abs((t * self.object_speed + self.spec.seed * 37) % (2 * span_x) - span_x))
        y = int(abs((t * self.object_speed * 0.4 + self.spec.seed * 13) % (2 * span_y) - span_y))
        img[y : y + size, x : x + size] = self.object_colour
        img += self.noise[t % len(self.noise)]
        strength = self.flash_frames.get(t)
        if strength:
            img = img * (1 - strength) + 255.0 * strength
        return np.clip(img, 0, 255)


def encode_frames(path: str, frames, fps: int, width: int, height: int, codec: str = "h264", gop: int = 0,
                  preset: str = "veryfast", x264_params: str = "") -> int:
    """Encode an iterable of RGB frames into ``path``; ``gop`` > 0 sets the keyframe spacing; ``preset``
    is libx264's (``veryfast`` has B-frames, ``ultrafast`` none), ``x264_params`` its extra settings
    (``scenecut=0``: no keyframe at cuts, as fixed-GOP web encodes). Returns the number of frames written."""
    container = av.open(path, mode="w")
    stream = container.add_stream(ENCODERS[codec], rate=fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = CODECS[codec][1]
    if gop:
        stream.codec_context.gop_size = gop
    if codec == "h264":
        stream.options = {"preset": preset, "crf": "23", **({"x264-params": x264_params} if x264_params else {})}
    elif codec == "hevc":
        stream.options = {"x265-params": "log-level=error"}
    count = 0
    for img in frames:
        frame = av.VideoFrame.from_ndarray(np.asarray(img, dtype=np.uint8), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
        count += 1
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return count


def _fade_weights(kind: str, length: int) -> tuple[list[float], list[float]]:
    """Brightness of the outgoing and incoming shot's frames over a fade of ``length`` frames."""
    if kind == "fade":
        out_len = length // 2
        black = 1 if length >= 6 else 0
        in_len = length - out_len - black
    elif kind == "fade_out":
        out_len, black, in_len = length, 0, 0
    else:  # fade_in
        out_len, black, in_len = 0, 0, length
    outgoing = [1.0 - (i + 1) / (out_len + 1) for i in range(out_len)] + [0.0] * black
    incoming = [(i + 1) / (in_len + 1) for i in range(in_len)]
    return outgoing, incoming


def _script_frames(shots: list[ShotSpec], transitions: list[TransitionSpec], width: int, height: int,
                   truth: ScriptedVideo):
    """Yields the frames of a script, filling ``truth`` as it goes (frames are float RGB)."""
    t_global = 0
    renderers = [ShotRenderer(s, width, height) for s in shots]
    for i, (spec, render) in enumerate(zip(shots, renderers)):
        start_shot = t_global
        for t in range(spec.length):
            yield render.frame(t)
            t_global += 1
        for offset in spec.flashes:
            truth.distractors.append({"start_frame": start_shot + offset, "end_frame": start_shot + offset + 3,
                                      "kind": "flash"})
        if spec.motion in DISTRACTOR_MOTIONS:
            truth.distractors.append({"start_frame": start_shot, "end_frame": t_global, "kind": spec.motion})
        if i == len(shots) - 1:
            break
        trans = transitions[i]
        nxt, nxt_render = shots[i + 1], renderers[i + 1]
        start = t_global
        if trans.kind == "cut" or trans.length <= 0:
            truth.transitions.append({"start_frame": start, "end_frame": start, "kind": "cut"})
            truth.cuts.append(start)
            continue
        if trans.kind == "dissolve":
            for k in range(trans.length):
                a = (k + 1) / (trans.length + 1)
                yield (1 - a) * render.frame(spec.length + k) + a * nxt_render.frame(-trans.length + k)
                t_global += 1
        else:
            outgoing, incoming = _fade_weights(trans.kind, trans.length)
            for k, g in enumerate(outgoing):
                yield render.frame(spec.length + k) * g
                t_global += 1
            for k, g in enumerate(incoming):
                yield nxt_render.frame(-len(incoming) + k) * g
                t_global += 1
        truth.transitions.append({"start_frame": start, "end_frame": t_global, "kind": trans.kind})
        truth.cuts.append((start + t_global) // 2)


def write_scripted_video(
    path: str,
    shots: list[ShotSpec],
    transitions: list[TransitionSpec] | None = None,
    fps: int = 25,
    width: int = 320,
    height: int = 180,
    codec: str = "h264",
    preset: str = "veryfast",
    gop: int = 0,
    x264_params: str = "",
) -> ScriptedVideo:
    """Encode a scripted video; ``transitions[i]`` joins ``shots[i]`` and ``shots[i + 1]``
    (default: all cuts); ``preset`` and ``gop`` go to :func:`encode_frames`. Returns the truth
    (transitions, boundaries, distractor spans)."""
    transitions = list(transitions) if transitions is not None else [TransitionSpec()] * (len(shots) - 1)
    if len(transitions) != max(0, len(shots) - 1):
        raise ValueError("need exactly one transition between each pair of shots")
    for trans in transitions:
        if trans.kind not in TRANSITIONS:
            raise ValueError(f"unknown transition {trans.kind!r}; known: {TRANSITIONS}")
    truth = ScriptedVideo(path=path, fps=fps, num_frames=0)
    truth.num_frames = encode_frames(path, _script_frames(shots, transitions, width, height, truth),
                                      fps, width, height, codec, gop=gop, preset=preset,
                                      x264_params=x264_params)
    return truth


def random_script(seed: int, seconds: float, fps: int = 25) -> tuple[list[ShotSpec], list[TransitionSpec]]:
    """A plausible edit: shots of 1-8 s with mixed motion, some flashes, and about one gradual
    transition in three (dissolves 8-30 frames, fades 10-40 frames)."""
    rng = np.random.default_rng(seed)
    shots: list[ShotSpec] = []
    transitions: list[TransitionSpec] = []
    total = 0
    motions = ["drift", "drift", "static", "pan", "fast_pan", "zoom", "fast_object", "shake"]
    while total < seconds * fps:
        length = int(rng.uniform(1.0, 8.0) * fps)
        motion = motions[int(rng.integers(0, len(motions)))]
        flashes = (int(rng.integers(8, max(9, length - 8))),) if rng.random() < 0.15 and length > 20 else ()
        shots.append(ShotSpec(length, motion, flashes, seed=int(rng.integers(0, 1 << 30))))
        total += length
        if total < seconds * fps:
            r = rng.random()
            if r < 0.62:
                transitions.append(TransitionSpec("cut"))
            elif r < 0.82:
                transitions.append(TransitionSpec("dissolve", int(rng.integers(8, 31))))
            else:
                kind = ["fade", "fade_out", "fade_in"][int(rng.integers(0, 3))]
                transitions.append(TransitionSpec(kind, int(rng.integers(10, 41))))
    return shots, transitions


# -- rotated phone video ----------------------------------------------------------------------
# PyAV cannot write a display matrix and no ffmpeg binary is at hand, so a rotated MP4 is made the
# way a phone's is read: the video track's ``tkhd`` box carries a 3x3 matrix (ISO/IEC 14496-12
# 8.3.2: nine 32-bit values a b u c d v x y w, 16.16 fixed point except u v w in 2.30) that maps
# coded pixels to the display: x' = a*x + c*y + tx, y' = b*x + d*y + ty. Phones write the sensor's
# picture and this matrix; ffmpeg exports it as the frame's display matrix.
_ONE, _W = 1 << 16, 1 << 30
_CLOCKWISE_MATRIX = {  # display rotation clockwise → (a, b, c, d); tx/ty keep the picture in view
    90: (0, _ONE, -_ONE, 0), 180: (-_ONE, 0, 0, -_ONE), 270: (0, -_ONE, _ONE, 0),
}


def _boxes(data: bytes, start: int, end: int):
    """(type, box start, payload start, box end) of the MP4 boxes in ``data[start:end]``."""
    pos = start
    while pos + 8 <= end:
        size, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        header = 8
        if size == 1:
            size, header = int.from_bytes(data[pos + 8:pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind, pos, pos + header, pos + size
        pos += size


def set_display_rotation(path: str, clockwise: int) -> None:
    """Rewrite the video track's ``tkhd`` matrix of the MP4 at ``path`` in place so players show it
    turned ``clockwise`` degrees (90, 180, 270), as a phone held upright records it. Only the 36
    matrix bytes change: frames, sizes and timestamps are untouched."""
    data = bytearray(open(path, "rb").read())
    a, b, c, d = _CLOCKWISE_MATRIX[clockwise]
    patched = 0
    for kind, _, body, end in _boxes(data, 0, len(data)):
        if kind != b"moov":
            continue
        for trak_kind, _, trak_body, trak_end in _boxes(data, body, end):
            if trak_kind != b"trak":
                continue
            for box_kind, box_start, box_body, _ in _boxes(data, trak_body, trak_end):
                if box_kind != b"tkhd":
                    continue
                version = data[box_body]
                matrix = box_body + 4 + (32 if version == 1 else 20) + 8 + 8  # after times, id, duration, reserved, layer...
                width = int.from_bytes(data[matrix + 36:matrix + 40], "big") >> 16
                height = int.from_bytes(data[matrix + 40:matrix + 44], "big") >> 16
                if not width or not height:
                    continue  # an audio track
                tx = height if clockwise == 90 else width if clockwise == 180 else 0
                ty = width if clockwise == 270 else height if clockwise == 180 else 0
                values = (a, b, 0, c, d, 0, tx << 16, ty << 16, _W)
                data[matrix:matrix + 36] = b"".join(v.to_bytes(4, "big", signed=True) for v in values)
                patched += 1
    if not patched:
        raise ValueError(f"{path}: no video track header (tkhd) found to rotate")
    with open(path, "wb") as f:
        f.write(data)


def write_rotated_video(path: str, clockwise: int, width: int = 64, height: int = 48, frames: int = 25,
                        fps: int = 25) -> None:
    """A short MP4 whose coded frames have a red top half and a blue bottom half, shown turned
    ``clockwise`` degrees: upright, the red half is on the right for 90, at the bottom for 180, on
    the left for 270, and a 90/270 picture is ``height`` wide and ``width`` tall."""
    picture = np.zeros((height, width, 3), np.uint8)
    picture[: height // 2, :, 0] = 255
    picture[height // 2:, :, 2] = 255
    encode_frames(path, (picture for _ in range(frames)), fps, width, height, gop=12)
    set_display_rotation(path, clockwise)


def write_known_cut_dataset(root: str, videos: list[tuple[str, list[int]]], per_shard: int = 3,
                            clips=None) -> None:
    """A dataset as ``longvid ingest`` writes it (shards, index parts, ``dataset.json``) from
    generated videos whose cuts are known, without Ray or shot detection: for tests and benchmarks.
    The ingest's own stages and sink, run by the in-process executor, with the shot detector
    replaced by the known cuts. ``videos``: (path, cut frames) pairs; ``clips``: a ``ClipConfig``."""
    from .annotators.clips import ClipConfig
    from .annotators.fetch import Fetch
    from .annotators.plan import Plan
    from .annotators.probe import Probe
    from .pipelines.executors import LocalExecutor
    from .pipelines.shard_sink import IngestState, WriteShards
    from .shards import Storage, finalize

    cuts = {path: list(c) for path, c in videos}
    stages = [Fetch(), Probe(), KnownCuts(cuts, clips or ClipConfig()), Plan(),
              WriteShards(root, max_videos=per_shard, max_bytes=1 << 40)]
    state = IngestState({}, [], 0)
    items = [{"source": {"url": path, "source_index": i}} for i, (path, _) in enumerate(videos)]
    for row in LocalExecutor(stages, shared={"ingest": state}).run(items):
        if row["status"] != "ok":
            raise ValueError(f"{row['url']}: {row['stage']}: {row['reason']}")
    finalize(Storage.for_uri(root))


class KnownCuts(Stage):
    """A segment stage that knows the answer: shots and clips from the generator's cut list."""

    name = "segment"
    version = "known"

    def __init__(self, cuts: dict[str, list[int]], clip_config):
        self.cuts, self.clip_config = cuts, clip_config

    def process(self, item: dict) -> dict:
        from .annotators.clips import make_clips
        from .annotators.shots import shots_from_boundaries

        probe = item["probe"]
        shots = shots_from_boundaries(self.cuts[item["source"]["url"]], probe["num_frames"], probe["fps"])
        item["shots"] = shots
        item["clips"] = make_clips(item["video_id"], shots, probe["num_frames"], probe["fps"], self.clip_config)
        return item
