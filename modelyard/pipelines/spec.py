"""``modelyard.yml``: a pipeline of jobs, in the spirit of ``.gitlab-ci.yml``.

Top-level keys are the pipeline's settings (``name``, ``experiment``, ``stages``, ``variables``,
``params_file``, ``default``, ``protected_aliases``, ``ci``); every other top-level mapping is a
job, and keys starting with ``.`` are hidden (templates for YAML anchors), as in GitLab.

A job has exactly one of ``script`` (shell lines), ``run`` (a Python callable ``module:function``
or ``path/file.py:function``) or an ML step (``gate``, ``register``, ``promote``, ``deploy``,
``monitor``). :func:`load` checks everything it can before anything runs and raises one
:class:`SpecError` listing every problem with its line: unknown keys (with the closest valid one),
wrong types, missing needs, cycles, needs on a later stage, undefined variables, params missing
from the params file, conditions that do not parse.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.pipelines import _yaml
from modelyard.pipelines._yaml import YList, YMap
from modelyard.pipelines.rules import WHEN_VALUES, RuleError, parse_if

__all__ = [
    "Pipeline", "Job", "Rule", "Resources", "SpecError", "load", "loads", "STEP_KINDS", "DEFAULT_FILE",
    "parse_duration", "parse_memory", "expand",
]

DEFAULT_FILE = "modelyard.yml"
STEP_KINDS = ("gate", "register", "promote", "deploy", "monitor")
KINDS = ("script", "run", *STEP_KINDS)

_TOP_KEYS = ("name", "experiment", "stages", "variables", "params_file", "default", "protected_aliases", "ci",
             "workflow", "deployments")  # deployments: read by `modelyard serve --deployment modelyard.yml`
_JOB_KEYS = ("stage", "script", "run", "args", *STEP_KINDS, "needs", "variables", "rules", "when", "params",
             "inputs", "outputs", "code", "metrics", "env", "resources", "retry", "timeout", "cache", "ci",
             "description", "extends")
_DEFAULT_KEYS = ("retry", "timeout", "resources", "variables", "ci")
_RULE_KEYS = ("if", "branch", "changes", "when")
_RESOURCE_KEYS = ("cpus", "gpus", "memory")
_CI_KEYS = ("image", "tags", "before_script", "variables", "runner_tags", "install")

# Each ML step's keys: (required, optional).
STEP_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gate": (("conditions",), ("metrics_from", "model", "champion_alias", "if_no_champion")),
    "register": (("model", "name"), ("metrics_from", "description", "tags")),
    "promote": (("alias",), ("name", "version", "protected")),
    "deploy": (("deployment",), ("name", "version", "weight", "alias", "shadow", "endpoint_url")),
    "monitor": (("deployment",), ("monitors", "alert_rules")),
}
DEFAULT_PROTECTED_ALIASES = ("production", "champion")
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|(?P<dollar>\$))")


class SpecError(ValueError):
    """A bad pipeline file: every problem found, each as ``file:line: message``."""

    def __init__(self, problems: list[tuple[int | None, str]], path: str = DEFAULT_FILE):
        self.problems = sorted(dict.fromkeys(problems), key=lambda p: (p[0] or 0))
        self.path = path
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.path}:{line}: {msg}" if line else f"{self.path}: {msg}" for line, msg in self.problems]


@dataclass(frozen=True)
class Rule:
    when: str = "on_success"
    if_: str | None = None
    branch: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()
    line: int = 0


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0
    memory: int | None = None  # bytes


@dataclass
class Job:
    name: str
    kind: str
    stage: str
    line: int = 0
    script: list[str] = field(default_factory=list)
    run: str | None = None
    args: dict = field(default_factory=dict)
    step: dict = field(default_factory=dict)
    needs: list[str] | None = None  # None: every job of the earlier stages
    variables: dict[str, str] = field(default_factory=dict)  # the pipeline's and the job's, resolved
    rules: list[Rule] = field(default_factory=list)
    when: str = "on_success"
    params: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    code: list[str] = field(default_factory=list)
    metrics: str | None = None
    env: list[str] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    retry: int = 0
    timeout: float | None = None
    cache: bool = True
    ci: dict = field(default_factory=dict)
    description: str | None = None

    @property
    def is_step(self) -> bool:
        return self.kind in STEP_KINDS

    def command_text(self) -> str:
        """What the job does, as text: part of its cache key and of its MLflow run."""
        if self.kind == "script":
            return "\n".join(self.script)
        if self.kind == "run":
            return f"run {self.run} {sorted(self.args.items())!r}"
        return f"{self.kind} {_canonical(self.step)}"


@dataclass
class Pipeline:
    name: str
    path: Path
    root: Path
    experiment: str
    stages: list[str]
    variables: dict[str, str]
    jobs: dict[str, Job]
    params_file: str | None = None
    params: dict = field(default_factory=dict)
    protected_aliases: tuple[str, ...] = DEFAULT_PROTECTED_ALIASES
    ci: dict = field(default_factory=dict)
    text_hash: str = ""

    def deps(self, name: str) -> list[str]:
        """The jobs ``name`` waits for: its ``needs``, or every job of the earlier stages."""
        cache = self.__dict__.setdefault("_deps", {})
        if name not in cache:
            job = self.jobs[name]
            if job.needs is not None:
                cache[name] = list(job.needs)
            else:
                index = self.stages.index(job.stage)
                cache[name] = [j.name for j in self.jobs.values() if self.stages.index(j.stage) < index]
        return list(cache[name])

    def order(self) -> list[str]:
        """Jobs in a topological order that keeps the file's order where the DAG allows."""
        if "_order" not in self.__dict__:
            position = {n: i for i, n in enumerate(self.jobs)}
            unmet = {n: set(self.deps(n)) for n in self.jobs}
            dependents: dict[str, list[str]] = {n: [] for n in self.jobs}
            for n, ds in unmet.items():
                for d in ds:
                    dependents.setdefault(d, []).append(n)
            import heapq

            heap = [(position[n], n) for n, ds in unmet.items() if not ds]
            heapq.heapify(heap)
            out: list[str] = []
            while heap:
                _, n = heapq.heappop(heap)
                out.append(n)
                for m in dependents.get(n, []):
                    unmet[m].discard(n)
                    if not unmet[m]:
                        heapq.heappush(heap, (position[m], m))
            if len(out) != len(self.jobs):  # load() rejects cycles
                raise SpecError([(None, "the jobs form a cycle")], str(self.path))
            self.__dict__["_order"] = out
        return list(self.__dict__["_order"])

    def downstream(self, names: set[str]) -> set[str]:
        """``names`` and every job that depends on one of them, directly or not."""
        out = set(names)
        for name in self.order():
            if any(d in out for d in self.deps(name)):
                out.add(name)
        return out

    def upstream(self, names: set[str]) -> set[str]:
        out: set[str] = set()
        todo = list(names)
        while todo:
            n = todo.pop()
            if n in out:
                continue
            out.add(n)
            todo.extend(self.deps(n))
        return out

    def param_values(self, job: Job) -> dict[str, Any]:
        """The job's params as a flat ``{dotted.key: value}``."""
        out: dict[str, Any] = {}
        for key in job.params:
            value = _lookup(self.params, key)
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in _flatten(value).items()})
            else:
                out[key] = value
        return out


# -- loading --------------------------------------------------------------------------------------
def load(path: str | os.PathLike = DEFAULT_FILE, environ: dict | None = None) -> Pipeline:
    """Read and check a pipeline file. Raises :class:`SpecError` with every problem found."""
    path = Path(path)
    if path.is_dir():
        path = path / DEFAULT_FILE
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([(None, f"cannot read the pipeline file: {exc.strerror}")], str(path)) from None
    return loads(text, path=path, environ=environ)


def loads(text: str, path: str | os.PathLike = DEFAULT_FILE, environ: dict | None = None) -> Pipeline:
    path = Path(path).resolve()
    checker = _Checker(str(path.name), path.parent, dict(os.environ if environ is None else environ))
    try:
        doc = _yaml.load(text)
    except _yaml.YamlError as exc:
        raise SpecError([(exc.line, exc.message)], path.name) from None
    pipeline = checker.pipeline(doc, path, text)
    if checker.problems:
        raise SpecError(checker.problems, path.name)
    return pipeline


class _Checker:
    def __init__(self, filename: str, root: Path, environ: dict):
        self.filename = filename
        self.root = root
        self.environ = environ
        self.problems: list[tuple[int | None, str]] = []

    def err(self, line: int | None, message: str) -> None:
        self.problems.append((line, message))

    # -- top level ---------------------------------------------------------------------------------
    def pipeline(self, doc: Any, path: Path, text: str) -> Pipeline:
        empty = Pipeline(name=path.parent.name, path=path, root=path.parent, experiment=path.parent.name,
                         stages=[], variables={}, jobs={})
        if doc is None:
            self.err(None, "the file is empty: define at least one job")
            return empty
        if not isinstance(doc, YMap):
            self.err(_yaml.line_of(doc, 1), "the top level must be a mapping of settings and jobs")
            return empty
        name = self.string(doc, "name", "pipeline") or path.parent.name
        experiment = self.string(doc, "experiment", "pipeline") or name
        stages = self.string_list(doc, "stages", "pipeline")
        if len(set(stages)) != len(stages):
            self.err(doc.line_of("stages"), "stages: a stage is listed twice")
        builtins = {"MODELYARD_PIPELINE": name, "MODELYARD_PIPELINE_ROOT": str(path.parent)}
        variables = self.variables(doc.get("variables"), doc.line_of("variables"), {**builtins}, "pipeline")
        default = doc.get("default") if isinstance(doc.get("default"), YMap) else YMap()
        if "default" in doc:
            self.keys(doc["default"], _DEFAULT_KEYS, "default", doc.line_of("default"))
        params_file = self.string(doc, "params_file", "pipeline")
        params = self.params_file(params_file, doc.line_of("params_file"), path.parent)
        if params_file is None and (path.parent / "params.yaml").exists():
            params_file = "params.yaml"
        protected = tuple(self.string_list(doc, "protected_aliases", "pipeline")) if "protected_aliases" in doc \
            else DEFAULT_PROTECTED_ALIASES
        ci = doc.get("ci") if isinstance(doc.get("ci"), YMap) else {}
        if "ci" in doc:
            self.keys(doc["ci"], _CI_KEYS, "ci", doc.line_of("ci"))
        if "workflow" in doc and not isinstance(doc["workflow"], YMap):
            self.err(doc.line_of("workflow"), "workflow must be a mapping")

        raw_jobs: dict[str, YMap] = {}
        for key, value in doc.items():
            if key in _TOP_KEYS or key.startswith("."):
                continue
            line = doc.line_of(key)
            if not isinstance(value, YMap):
                close = _close(key, _TOP_KEYS, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.err(line, f"unknown key '{key}'{hint}: a job must be a mapping with script, run or an ML step")
                continue
            if not _JOB_NAME.match(key):
                self.err(line, f"job name '{key}' must start with a letter or digit and use only letters, "
                               "digits, '.', '_' and '-' (at most 100 characters)")
                continue
            raw_jobs[key] = value
        if not raw_jobs and doc:
            self.err(doc.line, "no jobs: define at least one job with script, run or an ML step")

        if stages:
            default_stage = "test" if "test" in stages else stages[0]
        else:
            # Without a stages list, stages come from the jobs in file order.
            default_stage = "default"
            for raw in raw_jobs.values():
                s = raw.get("stage", default_stage)
                if isinstance(s, str) and s not in stages:
                    stages.append(s)
            stages = stages or [default_stage]
        jobs = {}
        for jname, raw in raw_jobs.items():
            job = self.job(jname, raw, doc.line_of(jname), stages, default_stage, variables, default, params)
            if job is not None:
                jobs[jname] = job
        pipeline = Pipeline(
            name=name, path=path, root=path.parent, experiment=experiment, stages=stages, variables=variables,
            jobs=jobs, params_file=params_file, params=params, protected_aliases=protected, ci=dict(ci),
            text_hash=hashlib.sha256(text.encode()).hexdigest(),
        )
        self.graph(pipeline, raw_jobs)
        self.outputs(pipeline, raw_jobs)
        return pipeline

    def params_file(self, name: str | None, line: int, root: Path) -> dict:
        candidate = root / (name or "params.yaml")
        if not candidate.exists():
            if name is not None:
                self.err(line, f"params_file '{name}' does not exist")
            return {}
        try:
            data = _yaml.load(candidate.read_text())
        except _yaml.YamlError as exc:
            self.err(line, f"params file {candidate.name}:{exc.line}: {exc.message}")
            return {}
        if data is None:
            return {}
        if not isinstance(data, dict):
            self.err(line, f"params file {candidate.name} must hold a mapping")
            return {}
        return _plain(data)

    # -- one job -----------------------------------------------------------------------------------
    def job(self, name: str, raw: YMap, line: int, stages: list[str], default_stage: str, pipeline_vars: dict,
            default: YMap, params: dict) -> Job | None:
        where = f"job '{name}'"
        self.keys(raw, _JOB_KEYS, where, line)
        kinds = [k for k in KINDS if k in raw]
        if not kinds:
            self.err(line, f"{where}: needs one of script, run, {', '.join(STEP_KINDS)}")
            return None
        if len(kinds) > 1:
            self.err(raw.line_of(kinds[1]), f"{where}: has both {kinds[0]} and {kinds[1]}; a job does one thing")
        kind = kinds[0]
        stage = raw.get("stage", default_stage)
        if not isinstance(stage, str) or stage not in stages:
            self.err(raw.line_of("stage"), f"{where}: stage '{stage}' is not in stages {stages}")
            stage = stages[0]
        variables = {**pipeline_vars, "MODELYARD_JOB": name, "MODELYARD_STAGE": stage}
        if isinstance(default.get("variables"), YMap):
            variables = self.variables(default["variables"], default.line_of("variables"), variables, "default")
        variables = self.variables(raw.get("variables"), raw.line_of("variables"), variables, where)
        job = Job(name=name, kind=kind, stage=stage, line=line, variables=variables)
        job.description = raw.get("description") if isinstance(raw.get("description"), str) else None

        if kind == "script":
            job.script = self.string_list(raw, "script", where, allow_string=True)
            if not job.script:
                self.err(raw.line_of("script"), f"{where}: script is empty")
        elif kind == "run":
            target = raw["run"]
            if not isinstance(target, str) or ":" not in target:
                self.err(raw.line_of("run"), f"{where}: run must be 'module:function' or 'path/file.py:function'")
            else:
                job.run = self.expand(target, variables, raw.line_of("run"), where)
            if "args" in raw:
                if isinstance(raw["args"], YMap):
                    job.args = _plain(self.expand_tree(raw["args"], variables, raw.line_of("args"), where))
                else:
                    self.err(raw.line_of("args"), f"{where}: args must be a mapping of keyword arguments")
        else:
            job.step = self.step(kind, raw[kind], raw.line_of(kind), where, variables)
        if "args" in raw and kind != "run":
            self.err(raw.line_of("args"), f"{where}: args is only for run jobs")

        if "needs" in raw:
            job.needs = self.needs(raw["needs"], raw.line_of("needs"), where)
        job.rules = self.rules(raw.get("rules"), raw.line_of("rules"), where) if "rules" in raw else []
        job.when = self.when(raw, where)
        job.params = self.string_list(raw, "params", where)
        for i, key in enumerate(job.params):
            if _lookup(params, key) is _MISSING:
                pl = raw["params"].line_of(i) if isinstance(raw.get("params"), YList) else raw.line_of("params")
                self.err(pl, f"{where}: param '{key}' is not in the params file")
        for key in ("inputs", "outputs", "code"):
            items = self.string_list(raw, key, where)
            lines = raw[key] if isinstance(raw.get(key), YList) else None
            values = []
            for i, item in enumerate(items):
                il = lines.line_of(i) if lines is not None else raw.line_of(key)
                item = self.expand(item, variables, il, where)
                clean = _clean_relpath(item)
                if clean is None:
                    self.err(il, f"{where}: {key} path '{item}' must be relative and stay inside the pipeline folder")
                    continue
                values.append(clean)
            setattr(job, key, values)
        if "metrics" in raw:
            m = raw["metrics"]
            if not isinstance(m, str):
                self.err(raw.line_of("metrics"), f"{where}: metrics must be the path of a JSON file")
            else:
                job.metrics = _clean_relpath(self.expand(m, variables, raw.line_of("metrics"), where))
                if job.metrics is None:
                    self.err(raw.line_of("metrics"), f"{where}: metrics path must be relative")
        job.env = self.string_list(raw, "env", where)
        res = raw.get("resources", default.get("resources"))
        res_line = raw.line_of("resources") if "resources" in raw else default.line_of("resources")
        job.resources = self.resources(res, res_line, where) if res is not None else Resources()
        retry = raw.get("retry", default.get("retry", 0))
        if isinstance(retry, YMap):
            retry = retry.get("max", 0)
        if not isinstance(retry, int) or isinstance(retry, bool) or not 0 <= retry <= 10:
            self.err(raw.line_of("retry"), f"{where}: retry must be a whole number from 0 to 10 (or {{max: n}})")
            retry = 0
        job.retry = retry
        timeout = raw.get("timeout", default.get("timeout"))
        if timeout is not None:
            try:
                job.timeout = parse_duration(timeout)
            except ValueError as exc:
                self.err(raw.line_of("timeout"), f"{where}: timeout: {exc}")
        cache = raw.get("cache", True)
        if not isinstance(cache, bool):
            self.err(raw.line_of("cache"), f"{where}: cache must be true or false")
        job.cache = cache is not False
        ci = raw.get("ci")
        if ci is not None:
            if isinstance(ci, YMap):
                self.keys(ci, _CI_KEYS, f"{where}: ci", raw.line_of("ci"))
                job.ci = _plain(ci)
            else:
                self.err(raw.line_of("ci"), f"{where}: ci must be a mapping")
        if "extends" in raw:
            self.err(raw.line_of("extends"), f"{where}: extends is not supported; use YAML anchors (<<: *name)")
        return job

    def step(self, kind: str, raw: Any, line: int, where: str, variables: dict) -> dict:
        required, optional = STEP_KEYS[kind]
        if not isinstance(raw, YMap):
            self.err(line, f"{where}: {kind} must be a mapping with {', '.join(required)}")
            return {}
        self.keys(raw, required + optional, f"{where}: {kind}", line)
        for key in required:
            if key not in raw:
                self.err(raw.line, f"{where}: {kind} needs '{key}'")
        expanded = self.expand_tree(raw, variables, line, where)
        step = _plain(expanded)
        if kind == "gate":
            from modelyard.pipelines import conditions

            conds = expanded.get("conditions")
            if isinstance(conds, str):
                conds = YList([conds])
                conds.line, conds.item_lines = raw.line_of("conditions"), [raw.line_of("conditions")]
            if not isinstance(conds, list) or not conds:
                if "conditions" in raw:
                    self.err(raw.line_of("conditions"), f"{where}: gate conditions must be a list of expressions")
            else:
                for i, c in enumerate(conds):
                    try:
                        parsed = conditions.parse(c)
                    except conditions.ConditionError as exc:
                        self.err(conds.line_of(i) if isinstance(conds, YList) else line, f"{where}: {exc}")
                        continue
                    if parsed.uses_champion and "model" not in raw:
                        self.err(conds.line_of(i) if isinstance(conds, YList) else line,
                                 f"{where}: a condition on champion.metrics needs the gate's 'model'")
                step["conditions"] = list(conds)
            if raw.get("if_no_champion", "pass") not in ("pass", "fail"):
                self.err(raw.line_of("if_no_champion"), f"{where}: if_no_champion must be pass or fail")
        if kind == "deploy" and "weight" in raw:
            w = _number(step["weight"])
            if w is None or not 0 < w <= 100:
                self.err(raw.line_of("weight"), f"{where}: deploy weight must be a percentage in (0, 100]")
            else:
                step["weight"] = w
        if kind == "promote" and "protected" in raw and not isinstance(raw["protected"], bool):
            self.err(raw.line_of("protected"), f"{where}: promote protected must be true or false")
        if "metrics_from" in raw:
            mf = raw["metrics_from"]
            step["metrics_from"] = [mf] if isinstance(mf, str) else list(mf) if isinstance(mf, list) else []
            if not step["metrics_from"] or not all(isinstance(x, str) for x in step["metrics_from"]):
                self.err(raw.line_of("metrics_from"), f"{where}: metrics_from must name a job or a list of jobs")
        if kind == "monitor":
            for key in ("monitors", "alert_rules"):
                if key in raw and not (isinstance(raw[key], list) and all(isinstance(x, dict) for x in raw[key])):
                    self.err(raw.line_of(key), f"{where}: monitor {key} must be a list of mappings")
        return step

    # -- pieces ------------------------------------------------------------------------------------
    def keys(self, raw: Any, allowed: tuple[str, ...], where: str, line: int) -> None:
        if not isinstance(raw, YMap):
            self.err(line, f"{where} must be a mapping")
            return
        for key in raw:
            if key not in allowed and not key.startswith("."):
                close = _close(key, allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.err(raw.line_of(key), f"{where}: unknown key '{key}'{hint}")

    def string(self, raw: YMap, key: str, where: str) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.err(raw.line_of(key), f"{where}: {key} must be a non-empty string")
            return None
        return value

    def string_list(self, raw: YMap, key: str, where: str, allow_string: bool = True) -> list[str]:
        value = raw.get(key)
        if value is None:
            return []
        if isinstance(value, str) and allow_string:
            return [value]
        if not isinstance(value, list):
            self.err(raw.line_of(key), f"{where}: {key} must be a list of strings")
            return []
        out = []
        for i, item in enumerate(value):
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                item = str(item)
            if not isinstance(item, str):
                self.err(value.line_of(i) if isinstance(value, YList) else raw.line_of(key),
                         f"{where}: {key} must be a list of strings")
                continue
            out.append(item)
        return out

    def variables(self, raw: Any, line: int, inherited: dict, where: str) -> dict:
        out = dict(inherited)
        if raw is None:
            return out
        if not isinstance(raw, YMap):
            self.err(line, f"{where}: variables must be a mapping")
            return out
        for key, value in raw.items():
            vl = raw.line_of(key)
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                self.err(vl, f"{where}: variable name '{key}' must be letters, digits and underscores")
                continue
            if isinstance(value, YMap) and "value" in value:  # GitLab's {value:, description:}
                value = value["value"]
            if isinstance(value, bool):
                value = "true" if value else "false"
            if where == "pipeline" and key in self.environ:
                out[key] = self.environ[key]  # as in GitLab, a variable set outside the file wins
                continue
            if not isinstance(value, (str, int, float)):
                self.err(vl, f"{where}: variable '{key}' must be a string or a number")
                continue
            out[key] = self.expand(str(value), out, vl, where)
        return out

    def expand(self, text: str, variables: dict, line: int, where: str) -> str:
        try:
            return expand(text, {**self.environ, **variables})
        except KeyError as exc:
            self.err(line, f"{where}: undefined variable '${exc.args[0]}'")
            return text

    def expand_tree(self, value: Any, variables: dict, line: int, where: str) -> Any:
        if isinstance(value, str):
            return self.expand(value, variables, _yaml.line_of(value, line), where)
        if isinstance(value, YMap):
            out = YMap({k: self.expand_tree(v, variables, value.line_of(k), where) for k, v in value.items()})
            out.line, out.key_lines = value.line, value.key_lines
            return out
        if isinstance(value, YList):
            out = YList(self.expand_tree(v, variables, value.line_of(i), where) for i, v in enumerate(value))
            out.line, out.item_lines = value.line, value.item_lines
            return out
        return value

    def needs(self, raw: Any, line: int, where: str) -> list[str]:
        if not isinstance(raw, list):
            self.err(line, f"{where}: needs must be a list of job names")
            return []
        out = []
        for i, item in enumerate(raw):
            if isinstance(item, YMap) and "job" in item:
                item = item["job"]
            if not isinstance(item, str):
                self.err(raw.line_of(i) if isinstance(raw, YList) else line, f"{where}: needs entries must be job names")
                continue
            out.append(item)
        return out

    def rules(self, raw: Any, line: int, where: str) -> list[Rule]:
        if not isinstance(raw, list):
            self.err(line, f"{where}: rules must be a list")
            return []
        out = []
        for i, item in enumerate(raw):
            il = raw.line_of(i) if isinstance(raw, YList) else line
            if not isinstance(item, YMap):
                self.err(il, f"{where}: each rule must be a mapping of if, branch, changes, when")
                continue
            self.keys(item, _RULE_KEYS, f"{where}: rule", il)
            when = item.get("when", "on_success")
            if when not in WHEN_VALUES:
                self.err(item.line_of("when"), f"{where}: rule when must be one of {', '.join(WHEN_VALUES)}")
            cond = item.get("if")
            if cond is not None:
                try:
                    parse_if(cond)
                except RuleError as exc:
                    self.err(item.line_of("if"), f"{where}: {exc}")
            branch = self.string_list(item, "branch", f"{where}: rule")
            changes = self.string_list(item, "changes", f"{where}: rule")
            out.append(Rule(when=when, if_=cond, branch=tuple(branch), changes=tuple(changes), line=il))
        return out

    def when(self, raw: YMap, where: str) -> str:
        when = raw.get("when", "on_success")
        if when not in WHEN_VALUES:
            self.err(raw.line_of("when"), f"{where}: when must be one of {', '.join(WHEN_VALUES)}")
            return "on_success"
        return when

    def resources(self, raw: Any, line: int, where: str) -> Resources:
        if not isinstance(raw, YMap):
            self.err(line, f"{where}: resources must be a mapping of cpus, gpus, memory")
            return Resources()
        self.keys(raw, _RESOURCE_KEYS, f"{where}: resources", line)
        cpus, gpus, memory = raw.get("cpus", 1), raw.get("gpus", 0), raw.get("memory")
        if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or cpus < 0:
            self.err(raw.line_of("cpus"), f"{where}: resources cpus must be a number >= 0")
            cpus = 1
        if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or gpus < 0:
            self.err(raw.line_of("gpus"), f"{where}: resources gpus must be a number >= 0")
            gpus = 0
        if memory is not None:
            try:
                memory = parse_memory(memory)
            except ValueError as exc:
                self.err(raw.line_of("memory"), f"{where}: resources memory: {exc}")
                memory = None
        return Resources(cpus=float(cpus), gpus=gpus, memory=memory)

    # -- across jobs -------------------------------------------------------------------------------
    def graph(self, pipeline: Pipeline, raw_jobs: dict[str, YMap]) -> None:
        jobs = pipeline.jobs
        stage_index = {s: i for i, s in enumerate(pipeline.stages)}
        for name, job in jobs.items():
            if job.needs is None:
                continue
            raw_needs = raw_jobs[name].get("needs")
            for i, need in enumerate(job.needs):
                nl = raw_needs.line_of(i) if isinstance(raw_needs, YList) else job.line
                if need == name:
                    self.err(nl, f"job '{name}' needs itself")
                elif need not in jobs:
                    close = _close(need, list(jobs), n=1)
                    hint = f" (did you mean '{close[0]}'?)" if close else ""
                    self.err(nl, f"job '{name}' needs '{need}', which is not defined{hint}")
                elif stage_index[jobs[need].stage] > stage_index[job.stage]:
                    self.err(nl, f"job '{name}' (stage {job.stage}) needs '{need}' of the later stage "
                                 f"{jobs[need].stage}")
        # Cycles through explicit needs (stage order alone cannot make one).
        state: dict[str, int] = {}
        path: list[str] = []

        def visit(n: str) -> None:
            state[n] = 1
            path.append(n)
            for d in jobs[n].needs or []:
                if d not in jobs or d == n:
                    continue
                if state.get(d) == 1:
                    cycle = path[path.index(d):] + [d]
                    raw_needs = raw_jobs[n].get("needs")
                    idx = (jobs[n].needs or []).index(d)
                    nl = raw_needs.line_of(idx) if isinstance(raw_needs, YList) else jobs[n].line
                    self.err(nl, f"cycle in needs: {' -> '.join(cycle)}")
                elif state.get(d) is None:
                    visit(d)
            path.pop()
            state[n] = 2

        for n in jobs:
            if n not in state:
                visit(n)

    def outputs(self, pipeline: Pipeline, raw_jobs: dict[str, YMap]) -> None:
        owner: dict[str, str] = {}
        for name, job in pipeline.jobs.items():
            for out in job.outputs:
                for other_out, other in owner.items():
                    if out == other_out or out.startswith(other_out + "/") or other_out.startswith(out + "/"):
                        self.err(raw_jobs[name].line_of("outputs"),
                                 f"job '{name}': output '{out}' overlaps output '{other_out}' of job '{other}'")
                owner[out] = name
        if self.problems:
            return
        # An input produced by another job must come after it in the DAG.
        for name, job in pipeline.jobs.items():
            ups = pipeline.upstream({name}) - {name}
            for inp in job.inputs:
                for out, producer in owner.items():
                    if producer != name and (inp == out or inp.startswith(out + "/")) and producer not in ups:
                        self.err(raw_jobs[name].line_of("inputs"),
                                 f"job '{name}': input '{inp}' is an output of '{producer}', which it does not need")


# -- helpers ----------------------------------------------------------------------------------------
_MISSING = object()


def _close(word: str, candidates, n: int = 1) -> list[str]:
    import difflib  # only a bad file pays for it

    return difflib.get_close_matches(word, list(candidates), n=n)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _lookup(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _canonical(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _clean_relpath(p: str) -> str | None:
    p = p.strip()
    if not p or p.startswith("/") or re.match(r"^[A-Za-z]:", p):
        return None
    parts = [x for x in p.replace("\\", "/").split("/") if x not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def expand(text: str, variables: dict) -> str:
    """``$VAR`` and ``${VAR}`` replaced from ``variables``; ``$$`` is a literal ``$``.

    Raises ``KeyError(name)`` for an undefined variable.
    """
    def sub(m: re.Match) -> str:
        if m.group("dollar"):
            return "$"
        name = m.group("braced") or m.group("bare")
        if name not in variables:
            raise KeyError(name)
        return str(variables[name])

    return _VAR.sub(sub, text) if "$" in text else text


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|hr|hrs|hours?|m|min|mins|minutes?|s|sec|secs|seconds?|d|days?)\b")
_UNITS = {"h": 3600, "m": 60, "s": 1, "d": 86400}


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"90s"``, ``"10m"``, ``"1h 30m"`` or ``"2 hours"`` (GitLab's forms)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90, '10m' or '1h 30m'")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError("must be positive")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 90, '10m' or '1h 30m'")
    text = value.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return parse_duration(float(text))
    total, pos = 0.0, 0
    for m in _DURATION.finditer(text):
        if text[pos:m.start()].strip(" ,and"):
            raise ValueError(f"cannot read duration {value!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)[0]]
        pos = m.end()
    if pos == 0 or text[pos:].strip() or total <= 0:
        raise ValueError(f"cannot read duration {value!r}; write for example '90s', '10m' or '1h 30m'")
    return total


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def parse_memory(value: Any) -> int:
    """Bytes from ``1073741824``, ``"512M"``, ``"2Gi"`` or ``"1GB"``."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512M or 2G")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("must be positive")
        return value
    m = _MEMORY.match(str(value))
    if not m:
        raise ValueError(f"cannot read size {value!r}; write for example 512M or 2G")
    unit = (m.group(2) or "b").lower()[0]
    factor = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[unit]
    return int(float(m.group(1)) * factor)
