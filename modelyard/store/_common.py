"""Small helpers the stores share: clocks, ids, tag upserts."""
from __future__ import annotations

import time
import uuid

__all__ = ["now_ms", "new_run_id", "new_model_id"]


def now_ms() -> int:
    return int(time.time() * 1000)


def new_run_id() -> str:
    return uuid.uuid4().hex


def new_model_id() -> str:
    return "m-" + uuid.uuid4().hex
