"""Monitoring: profiles and sketches, drift and quality statistics, monitors, alert rules,
notification channels and actions.

The statistics (:mod:`.sketch`, :mod:`.stats`, :mod:`.profile`, :mod:`.drift`) are plain numpy and
scipy and import nothing of the server, so the CLI and the benchmark use them on files directly.
"""
from __future__ import annotations

__all__: list[str] = []
