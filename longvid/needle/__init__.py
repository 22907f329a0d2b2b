"""Needle-in-a-video-haystack benchmarks (VideoChat-Flash's single and multi hop, SEEDS.md §5), built
from any ingested dataset and scored on the bundled model.

A room of its own: it may import ``shards`` (index parts, seek decoding) and ``model`` (the answer
path of ``longvid ask``); nothing imports it but the command line. Exports: ``build``,
``NeedleBuildConfig``, ``evaluate``, ``NeedleEvalConfig``, ``parse_choice``.
"""

from .benchmark import NeedleBuildConfig, build
from .evaluation import NeedleEvalConfig, evaluate
from .score import parse_choice

__all__ = ["NeedleBuildConfig", "NeedleEvalConfig", "build", "evaluate", "parse_choice"]
