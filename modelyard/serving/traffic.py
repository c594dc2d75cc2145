"""Traffic: lanes (a loaded version and its batcher) and the router that splits requests by weight.

A :class:`Router` is immutable: the arms of the spec, each resolved to the :class:`Lane` of the
version it serves now, with cumulative weights, and the shadow lane. Changing what is served (an
alias moved, a new spec) builds a new router from warm lanes and swaps it in with one assignment
on the event loop; requests already queued on an old lane finish there.
"""
from __future__ import annotations

import random
import time
from bisect import bisect_right
from collections import deque
from itertools import accumulate

from modelyard.serving.batcher import Batcher
from modelyard.serving.loader import LoadedModel
from modelyard.serving.spec import Arm, DeploymentSpec

__all__ = ["Lane", "Router"]


class Lane:
    """What serves one model version: the loaded model and its batcher."""

    def __init__(self, model: LoadedModel, max_rows: int, max_wait_s: float, on_batch=None):
        self.model = model
        self.version = model.version
        self.batcher = Batcher(f"v{model.version}", max_rows, max_wait_s,
                               on_batch=(lambda rows, n, s: on_batch(self.version, rows, n, s)) if on_batch else None)
        # A few recent request bodies, to warm up the version that replaces this one.
        self.recent: deque[tuple[bytes, bytes | None]] = deque(maxlen=4)
        self.retired_at: float | None = None

    def start(self, loop) -> None:
        self.batcher.start(loop)

    def close(self) -> None:
        self.batcher.close()
        self.model.release()


class Router:
    """The arms of a spec resolved to lanes, picked by weight."""

    def __init__(self, spec: DeploymentSpec, arms: list[tuple[Arm, Lane]], shadow: Lane | None, generation: int,
                 resolved: tuple = ()):
        self.spec = spec
        self.arms = arms
        self.generation = generation
        self.resolved = resolved  # (the version of each arm, the shadow's): what the spec meant when built
        weights = [arm.weight for arm, _ in arms]
        self._cumulative = list(accumulate(weights))
        self._total = self._cumulative[-1]
        self._single = arms[0][1] if len(arms) == 1 else None
        # A shadow that is also served normally would only compute everything twice.
        served = {lane.version for _, lane in arms}
        self.shadow = shadow if shadow is not None and shadow.version not in served else None

    def pick(self) -> Lane:
        if self._single is not None:
            return self._single
        i = bisect_right(self._cumulative, random.random() * self._total)
        return self.arms[min(i, len(self.arms) - 1)][1]

    @property
    def lanes(self) -> list[Lane]:
        """Every distinct lane in use, shadow included."""
        seen: dict[str, Lane] = {}
        for _, lane in self.arms:
            seen.setdefault(lane.version, lane)
        if self.shadow is not None:
            seen.setdefault(self.shadow.version, self.shadow)
        return list(seen.values())

    def lane_for_version(self, version: str) -> Lane | None:
        for lane in self.lanes:
            if lane.version == version:
                return lane
        return None

    @property
    def versions(self) -> str:
        """The versions answering, as the heartbeat reports them: ``"3"``, or ``"3,4"`` for a canary."""
        return ",".join(dict.fromkeys(lane.version for arm, lane in self.arms if arm.weight > 0))

    def describe(self) -> dict:
        total = self._total
        out = {
            "name": self.spec.name, "model_name": self.spec.model_name, "generation": self.generation,
            "arms": [{"ref": arm.label, "version": lane.version, "weight": arm.weight,
                      "share": arm.weight / total} for arm, lane in self.arms],
        }
        if self.shadow is not None:
            out["shadow"] = {"ref": self.spec.shadow.label, "version": self.shadow.version}
        return out

    def retire_others(self, old: "Router | None") -> list[Lane]:
        """Lanes of ``old`` that this router no longer uses, stamped with the time they left."""
        if old is None:
            return []
        keep = {id(lane) for lane in self.lanes}
        gone = [lane for lane in old.lanes if id(lane) not in keep]
        now = time.monotonic()
        for lane in gone:
            lane.retired_at = now
        return gone
