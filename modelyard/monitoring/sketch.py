"""Mergeable summaries of one column: a quantile sketch for numbers and capped counts for categories.

A :class:`QuantileSketch` is a sorted array of values that all weigh the same (``count / len``).
While a column has at most ``max_exact`` values it keeps them all (weight 1, so every statistic
computed from it is exact); beyond that it keeps ``size`` values taken at evenly spaced ranks. Two
sketches merge by pooling their weighted values and taking evenly spaced ranks again, so a window
is summarised once per bucket and a window of any length is the merge of its buckets: evaluating a
monitor never rescans the rows. Every cumulative distribution this module answers is exact for
exact sketches and off by at most about ``1/size`` in rank otherwise, which is far below the
thresholds the drift tests use.

:class:`CategoryCounts` keeps the ``cap`` most frequent values and lumps the rest into ``other``,
like whylogs' frequent-items sketch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["QuantileSketch", "CategoryCounts", "SKETCH_EXACT", "SKETCH_SIZE"]

SKETCH_EXACT = 1024  # Evidently's p-value regime is reference size <= 1000: keep those samples exact
SKETCH_SIZE = 512


@dataclass
class QuantileSketch:
    """Sorted values of equal weight; ``count`` is the number of values they stand for."""

    values: np.ndarray = field(default_factory=lambda: np.empty(0))
    count: int = 0

    @property
    def exact(self) -> bool:
        return len(self.values) == self.count

    @classmethod
    def from_values(cls, x: np.ndarray, size: int = SKETCH_SIZE, max_exact: int = SKETCH_EXACT) -> "QuantileSketch":
        """Summarise finite values (callers drop NaN first)."""
        x = np.sort(np.asarray(x, dtype=np.float64))
        n = len(x)
        if n <= max_exact:
            return cls(x, n)
        # The value at the middle of each of ``size`` equal slices of rank.
        idx = ((np.arange(size) + 0.5) * n / size).astype(np.int64)
        return cls(x[idx], n)

    @classmethod
    def merge(cls, sketches: list["QuantileSketch"], size: int = SKETCH_SIZE,
              max_exact: int = SKETCH_EXACT) -> "QuantileSketch":
        parts = [s for s in sketches if s.count]
        if not parts:
            return cls()
        if len(parts) == 1:
            return cls.compress(parts[0], size, max_exact)
        total = sum(s.count for s in parts)
        if all(s.exact for s in parts) and total <= max_exact:
            return cls(np.sort(np.concatenate([s.values for s in parts])), total)
        values = np.concatenate([s.values for s in parts])
        weights = np.concatenate([np.full(len(s.values), s.count / len(s.values)) for s in parts])
        order = np.argsort(values, kind="stable")
        values, cum = values[order], np.cumsum(weights[order])
        targets = (np.arange(size) + 0.5) * total / size
        idx = np.minimum(np.searchsorted(cum, targets, side="left"), len(values) - 1)
        return cls(values[idx], total)

    @classmethod
    def compress(cls, sketch: "QuantileSketch", size: int, max_exact: int) -> "QuantileSketch":
        if (sketch.exact and sketch.count <= max_exact) or len(sketch.values) <= size:
            return sketch
        idx = ((np.arange(size) + 0.5) * len(sketch.values) / size).astype(np.int64)
        return cls(sketch.values[idx], sketch.count)

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """Share of the values at or below each point of ``x``."""
        if not len(self.values):
            return np.zeros(len(np.atleast_1d(x)))
        return np.searchsorted(self.values, x, side="right") / len(self.values)

    def quantiles(self, q) -> np.ndarray:
        if not len(self.values):
            return np.full(len(np.atleast_1d(q)), np.nan)
        return np.quantile(self.values, q)

    def to_dict(self) -> dict:
        return {"count": self.count, "values": self.values}

    @classmethod
    def from_dict(cls, d: dict) -> "QuantileSketch":
        return cls(np.asarray(d.get("values", ()), dtype=np.float64), int(d.get("count", 0)))


@dataclass
class CategoryCounts:
    """Counts of the most frequent values (as strings), the rest summed in ``other``."""

    counts: dict[str, int] = field(default_factory=dict)
    other: int = 0
    cap: int = 256

    @property
    def total(self) -> int:
        return sum(self.counts.values()) + self.other

    @classmethod
    def from_counts(cls, counts: dict[str, int], cap: int = 256) -> "CategoryCounts":
        out = cls(cap=cap)
        out._absorb(counts, 0)
        return out

    def _absorb(self, counts: dict[str, int], other: int) -> None:
        merged = dict(self.counts)
        for k, v in counts.items():
            merged[k] = merged.get(k, 0) + int(v)
        other += self.other
        if len(merged) > self.cap:
            keep = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))
            other += sum(v for _, v in keep[self.cap:])
            merged = dict(keep[:self.cap])
        self.counts, self.other = merged, other

    @classmethod
    def merge(cls, parts: list["CategoryCounts"], cap: int = 256) -> "CategoryCounts":
        out = cls(cap=cap)
        for p in parts:
            out._absorb(p.counts, p.other)
        return out

    def to_dict(self) -> dict:
        return {"counts": self.counts, "other": self.other}

    @classmethod
    def from_dict(cls, d: dict, cap: int = 256) -> "CategoryCounts":
        return cls({str(k): int(v) for k, v in d.get("counts", {}).items()}, int(d.get("other", 0)), cap)
