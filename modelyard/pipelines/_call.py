"""Entry point of a ``run:`` job's process: import the callable, call it, record what it returned.

``MODELYARD_CALL`` holds ``{"target": "module:function" | "path/file.py:function", "args": {...},
"result_file": path}``. The function is called with ``args`` as keyword arguments; a returned
mapping of numbers is logged as the job's metrics.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path


def load(target: str):
    module_ref, _, func = target.rpartition(":")
    if not module_ref or not func:
        raise ValueError(f"run target {target!r} must be 'module:function' or 'path/file.py:function'")
    if module_ref.endswith(".py"):
        path = Path(module_ref).resolve()
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {module_ref}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_ref)
    fn = getattr(module, func, None)
    if not callable(fn):
        raise AttributeError(f"{module_ref} has no callable {func!r}")
    return fn


def main() -> int:
    call = json.loads(os.environ["MODELYARD_CALL"])
    sys.path.insert(0, os.getcwd())
    result_file = Path(call["result_file"])
    try:
        value = load(call["target"])(**call.get("args", {}))
    except BaseException as exc:  # noqa: BLE001 - reported to the runner, then a failing exit
        traceback.print_exc()
        result_file.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    try:
        result_file.write_text(json.dumps({"value": value}))
    except (TypeError, ValueError):
        result_file.write_text(json.dumps({"value": None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
