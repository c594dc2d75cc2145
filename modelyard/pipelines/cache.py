"""Caching by content: hashes of files and directories, cache keys, and why a job re-runs.

A job's cache key is the SHA-256 of its *key parts*: the command (script lines, the callable and
its arguments, or the ML step's settings), the code files it names, its params' values, its
variables and the environment variables it lists, the content of its inputs, and the keys of the
jobs it waits for. The last part makes any change re-run the job *and everything downstream*,
even when an upstream job happens to write identical bytes. The parts are kept beside the key
on the server, so a dry run can say which part changed since the job last ran.

Hashing a file costs a read of it; a stat cache (size, mtime, inode -> hash) under
``.modelyard/state.json`` skips files that did not change since they were last hashed, as git's
index does.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from modelyard.pipelines.spec import Job, Pipeline

__all__ = ["Hasher", "key_parts", "cache_key", "explain", "manifest_matches", "KEY_VERSION"]

KEY_VERSION = 1
STATE_DIR = ".modelyard"


class Hasher:
    """File and directory hashes with a stat cache persisted between runs."""

    def __init__(self, root: Path):
        self.root = root
        self.state_path = root / STATE_DIR / "state.json"
        self._stat: dict[str, list] = {}
        self._dirty = False
        try:
            data = json.loads(self.state_path.read_text())
            if data.get("version") == KEY_VERSION:
                self._stat = data.get("hashes", {})
        except (OSError, ValueError):
            pass

    def file(self, path: Path) -> str | None:
        """SHA-256 of a file's bytes, or None when it does not exist."""
        try:
            st = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        key = str(path)
        sig = [st.st_size, st.st_mtime_ns, st.st_ino]
        cached = self._stat.get(key)
        if cached is not None and cached[:3] == sig:
            return cached[3]
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        self._stat[key] = [*sig, digest]
        self._dirty = True
        return digest

    def describe(self, rel: str) -> dict | None:
        """``{type, hash, size}`` of a file, or ``{type: dir, hash, files: {rel: [hash, size]}}``; None if missing."""
        path = self.root / rel
        if path.is_file():
            return {"type": "file", "hash": self.file(path), "size": path.stat().st_size}
        if path.is_dir():
            files: dict[str, list] = {}
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for fn in sorted(filenames):
                    full = Path(dirpath) / fn
                    files[full.relative_to(path).as_posix()] = [self.file(full), full.stat().st_size]
            listing = "".join(f"{k}\0{v[0]}\n" for k, v in sorted(files.items()))
            return {"type": "dir", "hash": hashlib.sha256(listing.encode()).hexdigest(), "files": files}
        return None

    def content_hash(self, rel: str) -> str | None:
        d = self.describe(rel)
        return d["hash"] if d else None

    def save(self) -> None:
        """Write the stat cache atomically (two runs in one folder must not corrupt it)."""
        if not self._dirty:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        import tempfile

        live = {k: v for k, v in self._stat.items() if os.path.exists(k)}
        fd, tmp = tempfile.mkstemp(dir=self.state_path.parent, prefix=".state-")
        with os.fdopen(fd, "w") as f:
            json.dump({"version": KEY_VERSION, "hashes": live}, f)
        os.replace(tmp, self.state_path)
        self._dirty = False


def code_files(pipeline: Pipeline, job: Job) -> list[str]:
    """The code a job names: its ``code`` list, the module of its ``run`` callable, and files
    its script mentions (``python train.py`` names ``train.py``)."""
    found: list[str] = list(job.code)
    root = pipeline.root
    if job.kind == "run" and job.run:
        target = job.run.rsplit(":", 1)[0]
        if target.endswith(".py"):
            found.append(target)
        else:
            base = target.replace(".", "/")
            for candidate in (f"{base}.py", f"{base}/__init__.py"):
                if (root / candidate).is_file():
                    found.append(candidate)
                    break
    elif job.kind == "script":
        import shlex

        data = set(job.inputs) | set(job.outputs) | ({job.metrics} if job.metrics else set())
        for line in job.script:
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:
                tokens = line.split()
            for tok in tokens:
                tok = tok.strip()
                if not tok or tok.startswith("-") or "$" in tok or tok.startswith("/") or ".." in tok.split("/"):
                    continue
                if tok in data or len(tok) > 255:
                    continue
                if (root / tok).is_file():
                    found.append(Path(tok).as_posix())
                elif "." in tok and "/" not in tok and not tok.endswith(".py"):
                    # ``python -m pkg.module``: the module's file
                    mod = tok.replace(".", "/") + ".py"
                    if (root / mod).is_file():
                        found.append(mod)
    return sorted(dict.fromkeys(found))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _hidden(name: str) -> bool:
    # Where the pipeline lives on disk is not part of what it computes.
    return name in ("MODELYARD_PIPELINE_ROOT",)


def key_parts(pipeline: Pipeline, job: Job, hasher: Hasher, upstream_keys: dict[str, str],
              environ: dict | None = None) -> dict:
    """Everything a job's result depends on. Raises FileNotFoundError for a missing input or code file."""
    environ = os.environ if environ is None else environ
    code = {}
    for rel in code_files(pipeline, job):
        h = hasher.content_hash(rel)
        if h is None:
            raise FileNotFoundError(f"code file '{rel}' of job '{job.name}' does not exist")
        code[rel] = h
    inputs = {}
    for rel in job.inputs:
        h = hasher.content_hash(rel)
        if h is None:
            raise FileNotFoundError(f"input '{rel}' of job '{job.name}' does not exist")
        inputs[rel] = h
    params = {k: _json_safe(v) for k, v in sorted(pipeline.param_values(job).items())}
    variables = {k: v for k, v in sorted(job.variables.items()) if not _hidden(k)}
    env = {name: _sha(environ.get(name, "\0unset")) for name in sorted(job.env)}
    return {
        "v": KEY_VERSION,
        "kind": job.kind,
        "command": _sha(job.command_text()),
        "outputs": sorted(job.outputs),
        "code": code,
        "params": params,
        "variables": _sha(json.dumps(variables, sort_keys=True)),
        "env": env,
        "inputs": inputs,
        "upstream": dict(sorted(upstream_keys.items())),
    }


def cache_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def explain(parts: dict, previous: dict | None) -> list[str]:
    """Why ``parts`` differ from the key parts of the job's previous run, in words."""
    if not previous:
        return ["never ran with this pipeline"]
    reasons = []
    if previous.get("v") != parts.get("v"):
        return ["the cache format changed"]
    if previous.get("kind") != parts.get("kind") or previous.get("command") != parts.get("command"):
        reasons.append("the command changed")
    if previous.get("outputs") != parts.get("outputs"):
        reasons.append("the outputs changed")
    for label, key in (("code", "code"), ("input", "inputs")):
        old, new = previous.get(key, {}), parts.get(key, {})
        for path in sorted(set(old) | set(new)):
            if path not in old:
                reasons.append(f"{label} {path} is new")
            elif path not in new:
                reasons.append(f"{label} {path} is no longer used")
            elif old[path] != new[path]:
                reasons.append(f"{label} {path} changed")
    old, new = previous.get("params", {}), parts.get("params", {})
    for k in sorted(set(old) | set(new)):
        if old.get(k, "<unset>") != new.get(k, "<unset>"):
            reasons.append(f"param {k} changed ({old.get(k, '<unset>')} -> {new.get(k, '<unset>')})")
    if previous.get("variables") != parts.get("variables"):
        reasons.append("the variables changed")
    old, new = previous.get("env", {}), parts.get("env", {})
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            reasons.append(f"environment variable {k} changed")
    old, new = previous.get("upstream", {}), parts.get("upstream", {})
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            reasons.append(f"upstream job {k} changed")
    return reasons or ["no earlier successful run with this key"]


def manifest_matches(hasher: Hasher, manifest: dict) -> bool:
    """Do the files on disk equal an outputs manifest ``{path: describe()}``?"""
    for rel, want in manifest.items():
        have = hasher.describe(rel)
        if have is None or have["hash"] != want["hash"]:
            return False
    return True


def _json_safe(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return json.loads(json.dumps(v, default=str))
