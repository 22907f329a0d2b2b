"""Exact-content dedup: the second source whose bytes hash to content another key already holds
is dropped as a duplicate (a ledger row pointing at the first), its bytes never stored twice.

The registry of content hashes is shared state the executor owns (``shared["content"]``: an
object with ``claim(sha256, key) -> owner key``); this stage never knows whether it is an actor.
"""

from __future__ import annotations

from ..shards.faults import fault_point
from .base import Dropped, Resources, Stage


class Dedup(Stage):
    name = "dedup"
    version = "1"
    resources = Resources(num_cpus=0.25)  # one registry call per item; fetch's figure, so Ray Data fuses the two
    shared_state = ("content",)

    def process(self, item: dict):
        fault_point("worker-dedup")
        owner = self.shared["content"].claim(item["sha256"], item["video_id"])
        if owner != item["video_id"]:
            return Dropped(item, "same content as another source (sha256)", action="duplicate",
                           detail={"duplicate_of": owner})
        return item
