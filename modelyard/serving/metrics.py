"""Prometheus metrics of the model server, in the text exposition format.

A few counters, gauges and histograms keyed by label values, updated on the event loop (one
thread, so no locks) at a cost of a dict lookup per update. ``render()`` writes them for
``GET /metrics``.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Callable, Iterable

__all__ = ["Counter", "Gauge", "Histogram", "Registry", "LATENCY_BUCKETS", "ROW_BUCKETS"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))


class _Family:
    kind = ""

    def __init__(self, name: str, help: str, labels: Iterable[str] = ()):
        self.name = name
        self.help = help
        self.label_names = tuple(labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Family):
    """A count, incremented here or read from a function at render time (counts kept elsewhere)."""

    kind = "counter"

    def __init__(self, name, help, labels=(), read: Callable[[], dict[tuple, float]] | None = None):
        super().__init__(name, help, labels)
        self.values: dict[tuple, float] = {}
        self.read = read

    def inc(self, labels: tuple = (), amount: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def get(self, labels: tuple = ()) -> float:
        return self.values.get(labels, 0)

    def render(self) -> list[str]:
        if self.read is not None:
            self.values = dict(self.read())
        lines = self.header()
        if not self.values and not self.label_names:
            lines.append(f"{self.name} 0")
        for labels, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(self.label_names, labels)} {_number(value)}")
        return lines


class Gauge(Counter):
    """A value set now and then, or read from a function at render time."""

    kind = "gauge"

    def set(self, labels: tuple, value: float) -> None:
        self.values[labels] = value


class Histogram(_Family):
    kind = "histogram"

    def __init__(self, name, help, labels=(), buckets=LATENCY_BUCKETS):
        super().__init__(name, help, labels)
        self.buckets = tuple(buckets)
        self.series: dict[tuple, list] = {}  # labels -> [bucket counts..., +Inf count, sum]

    def observe(self, labels: tuple, value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0] * (len(self.buckets) + 2)
        series[bisect_left(self.buckets, value)] += 1
        series[-1] += value

    def render(self) -> list[str]:
        lines = self.header()
        for labels, series in sorted(self.series.items()):
            cumulative = 0
            for bound, count in zip((*self.buckets, float("inf")), series):
                cumulative += count
                le = 'le="' + _number(bound) + '"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, labels, le)} {cumulative}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, labels)} {_number(series[-1])}")
            lines.append(f"{self.name}_count{_labels(self.label_names, labels)} {cumulative}")
        return lines


class Registry:
    def __init__(self):
        self.families: list[_Family] = []

    def add(self, family):
        self.families.append(family)
        return family

    def render(self) -> bytes:
        lines: list[str] = []
        for family in self.families:
            lines.extend(family.render())
        return ("\n".join(lines) + "\n").encode()
