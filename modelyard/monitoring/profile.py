"""Profiles: the mergeable summary of a table, one :class:`ColumnProfile` per column.

A reference profile (the training data of a model version) and the summary of a bucket of live
traffic have the same form, so drift, data quality and schema checks compare two profiles, and the
profile of a window is the merge of its buckets' profiles.

A column may hold numbers and strings at once (live traffic is not typed); the profile keeps both
parts, and whichever part the reference does not have counts as a type error.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import orjson

from modelyard.monitoring.sketch import SKETCH_EXACT, SKETCH_SIZE, CategoryCounts, QuantileSketch

__all__ = ["NumericPart", "ColumnProfile", "Profile", "profile_frame", "profile_records", "dumps", "loads"]

DISTINCT_CAP = 20  # up to this many distinct numbers are also counted one by one (discrete columns)
REFERENCE_SKETCH = 2048
REFERENCE_CATEGORIES = 1000


@dataclass
class NumericPart:
    """The numbers of a column: moments, range, a quantile sketch and, if few, exact value counts."""

    n: int = 0
    sum: float = 0.0
    sumsq: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    sketch: QuantileSketch = field(default_factory=QuantileSketch)
    distinct: dict[float, int] | None = field(default_factory=dict)

    @classmethod
    def from_array(cls, x: np.ndarray, size: int = SKETCH_SIZE) -> "NumericPart":
        x = np.sort(np.asarray(x, dtype=np.float64))
        n = len(x)
        if n == 0:
            return cls()
        starts = np.flatnonzero(np.concatenate(([True], x[1:] != x[:-1])))
        distinct = None
        if len(starts) <= DISTINCT_CAP:
            ends = np.append(starts[1:], n)
            distinct = {float(x[s]): int(e - s) for s, e in zip(starts, ends)}
        if n <= SKETCH_EXACT:
            sketch = QuantileSketch(x, n)
        else:
            sketch = QuantileSketch(x[((np.arange(size) + 0.5) * n / size).astype(np.int64)], n)
        return cls(n, float(x.sum()), float(np.dot(x, x)), float(x[0]), float(x[-1]), sketch, distinct)

    @classmethod
    def merge(cls, parts: list["NumericPart"], size: int = SKETCH_SIZE) -> "NumericPart":
        parts = [p for p in parts if p.n]
        if not parts:
            return cls()
        distinct: dict[float, int] | None = {}
        for p in parts:
            if p.distinct is None or distinct is None:
                distinct = None
                continue
            for k, v in p.distinct.items():
                distinct[k] = distinct.get(k, 0) + v
        if distinct is not None and len(distinct) > DISTINCT_CAP:
            distinct = None
        return cls(sum(p.n for p in parts), sum(p.sum for p in parts), sum(p.sumsq for p in parts),
                   min(p.min for p in parts), max(p.max for p in parts),
                   QuantileSketch.merge([p.sketch for p in parts], size=size), distinct)

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else math.nan

    @property
    def std(self) -> float:
        """Population standard deviation (numpy's default, which Evidently's norm uses)."""
        if not self.n:
            return math.nan
        return math.sqrt(max(self.sumsq / self.n - self.mean ** 2, 0.0))

    def to_dict(self) -> dict:
        d = {"n": self.n, "sum": self.sum, "sumsq": self.sumsq, "sketch": self.sketch.to_dict()}
        if self.n:
            d.update(min=self.min, max=self.max)
        if self.distinct is not None:
            d["distinct"] = [[k, v] for k, v in self.distinct.items()]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NumericPart":
        distinct = None if "distinct" not in d else {float(k): int(v) for k, v in d["distinct"]}
        return cls(int(d.get("n", 0)), float(d.get("sum", 0)), float(d.get("sumsq", 0)),
                   float(d.get("min", math.inf)), float(d.get("max", -math.inf)),
                   QuantileSketch.from_dict(d.get("sketch", {})), distinct)


@dataclass
class ColumnProfile:
    """One column: how often it was present, null, a number, a string."""

    present: int = 0
    nulls: int = 0
    numeric: NumericPart = field(default_factory=NumericPart)
    categories: CategoryCounts = field(default_factory=CategoryCounts)
    kind: str = "numeric"  # what most of its values were: "numeric" or "categorical"

    @property
    def n_unique(self) -> int | None:
        """Distinct non-null values, when known exactly (categories, or few numbers)."""
        if self.kind == "categorical":
            return len(self.categories.counts) + (1 if self.categories.other else 0)
        if self.numeric.distinct is not None:
            return len(self.numeric.distinct)
        return None

    def value_counts(self) -> dict:
        """Counts by value for the chi-squared, z and categorical Jensen-Shannon tests."""
        if self.kind == "categorical":
            out = dict(self.categories.counts)
            if self.categories.other:
                out["\x00other"] = self.categories.other
            return out
        if self.numeric.distinct is not None:
            return dict(self.numeric.distinct)
        s = self.numeric.sketch
        if s.exact:
            vals, counts = np.unique(s.values, return_counts=True)
            return {float(v): int(c) for v, c in zip(vals, counts)}
        return {}

    @classmethod
    def merge(cls, parts: list["ColumnProfile"], size: int = SKETCH_SIZE, cap: int = 256) -> "ColumnProfile":
        numeric = NumericPart.merge([p.numeric for p in parts], size=size)
        categories = CategoryCounts.merge([p.categories for p in parts], cap=cap)
        kind = "categorical" if categories.total > numeric.n else "numeric"
        return cls(sum(p.present for p in parts), sum(p.nulls for p in parts), numeric, categories, kind)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "present": self.present, "nulls": self.nulls,
                "numeric": self.numeric.to_dict(), "categories": self.categories.to_dict()}

    @classmethod
    def from_dict(cls, d: dict, cap: int = 256) -> "ColumnProfile":
        return cls(int(d.get("present", 0)), int(d.get("nulls", 0)), NumericPart.from_dict(d.get("numeric", {})),
                   CategoryCounts.from_dict(d.get("categories", {}), cap), d.get("kind", "numeric"))


@dataclass
class Profile:
    """A table's summary: row count and one profile per column."""

    rows: int = 0
    columns: dict[str, ColumnProfile] = field(default_factory=dict)

    @classmethod
    def merge(cls, parts: list["Profile"], size: int = SKETCH_SIZE, cap: int = 256) -> "Profile":
        names: dict[str, list[ColumnProfile]] = {}
        for p in parts:
            for name, col in p.columns.items():
                names.setdefault(name, []).append(col)
        return cls(sum(p.rows for p in parts),
                   {n: ColumnProfile.merge(cols, size=size, cap=cap) for n, cols in names.items()})

    def to_dict(self) -> dict:
        return {"rows": self.rows, "columns": {n: c.to_dict() for n, c in self.columns.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Profile":
        return cls(int(d.get("rows", 0)), {n: ColumnProfile.from_dict(c) for n, c in d.get("columns", {}).items()})

    def schema(self) -> dict[str, str]:
        return {n: c.kind for n, c in self.columns.items()}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _profile_values(values: list, size: int, cap: int) -> ColumnProfile:
    """Profile a column given as a Python list (values as JSON decoded them; None is null)."""
    nums: list[float] = []
    strs: list[str] = []
    nulls = 0
    for v in values:
        if v is None:
            nulls += 1
        elif _is_number(v):
            if v != v:  # NaN
                nulls += 1
            else:
                nums.append(v)
        elif isinstance(v, bool):
            strs.append("True" if v else "False")
        elif isinstance(v, str):
            strs.append(v)
        else:  # lists and objects: compare by their JSON text
            strs.append(orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode())
    numeric = NumericPart.from_array(np.asarray(nums, dtype=np.float64), size=size) if nums else NumericPart()
    counts: dict[str, int] = {}
    for s in strs:
        counts[s] = counts.get(s, 0) + 1
    categories = CategoryCounts.from_counts(counts, cap=cap)
    kind = "categorical" if len(strs) > len(nums) else "numeric"
    return ColumnProfile(len(values), nulls, numeric, categories, kind)


def profile_records(rows: Iterable[dict], size: int = SKETCH_SIZE, cap: int = 256) -> Profile:
    """Profile JSON-like rows (dicts of column -> value), as prediction logs carry them."""
    rows = list(rows)
    names: dict[str, None] = {}
    for row in rows:
        for k in row:
            if k not in names:
                names[k] = None
    out = {}
    for name in names:
        # A key absent from a row is missing (counted against ``present``), not null.
        present = [row[name] for row in rows if name in row]
        out[name] = _profile_values(present, size, cap)
    return Profile(len(rows), out)


class _Missing:
    __slots__ = ()


_MISSING = _Missing()


def profile_frame(df, size: int = REFERENCE_SKETCH, cap: int = REFERENCE_CATEGORIES) -> Profile:
    """Profile a pandas DataFrame (a reference dataset or a file for a report), column by column
    with numpy: numeric columns never go through Python objects."""
    import pandas as pd

    out = {}
    for name in df.columns:
        s = df[name]
        key = str(name)
        if pd.api.types.is_bool_dtype(s.dtype):
            s = s.map({True: "True", False: "False"})
        if pd.api.types.is_numeric_dtype(s.dtype):
            x = s.to_numpy(dtype=np.float64, na_value=np.nan)
            finite = x[np.isfinite(x)] if np.issubdtype(x.dtype, np.floating) else x
            out[key] = ColumnProfile(len(s), len(x) - len(finite), NumericPart.from_array(finite, size=size),
                                     CategoryCounts(cap=cap), "numeric")
        elif pd.api.types.is_string_dtype(s.dtype) and not pd.api.types.is_object_dtype(s.dtype):
            counts = s.value_counts(dropna=True)
            out[key] = ColumnProfile(len(s), int(s.isna().sum()), NumericPart(),
                                     CategoryCounts.from_counts({str(k): int(v) for k, v in counts.items()}, cap),
                                     "categorical")
        else:
            values = [None if (v is None or (isinstance(v, float) and v != v)) else v for v in s.tolist()]
            out[key] = _profile_values(values, size, cap)
    return Profile(len(df), out)


def dumps(obj: dict) -> bytes:
    """Compact storage form of a profile or summary dict (orjson, numpy arrays included, zlib)."""
    return zlib.compress(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS), 1)


def loads(blob: bytes) -> dict:
    return orjson.loads(zlib.decompress(blob))
