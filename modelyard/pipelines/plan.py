"""Which jobs a run includes, and why the others are left out.

Rules are GitLab's: the first matching rule sets the job's ``when``; ``never`` (or no matching
rule) leaves the job out, and a job that needs it loses that need, as with GitLab's optional
needs. A ``manual`` job runs only when asked for (``--manual NAME``, or named as a target); the
jobs that wait for a manual job that was not asked for are left out with it.
"""
from __future__ import annotations

from dataclasses import dataclass

from modelyard.pipelines.rules import RuleContext, parse_if
from modelyard.pipelines.spec import Job, Pipeline

__all__ = ["PlanEntry", "Plan", "make_plan"]


@dataclass
class PlanEntry:
    name: str
    included: bool
    reason: str = ""
    when: str = "on_success"


@dataclass
class Plan:
    pipeline: Pipeline
    entries: dict[str, PlanEntry]

    @property
    def included(self) -> list[str]:
        return [n for n in self.pipeline.order() if self.entries[n].included]

    def deps(self, name: str) -> list[str]:
        """The included jobs ``name`` waits for."""
        return [d for d in self.pipeline.deps(name) if self.entries[d].included]


def _when(job: Job, ctx: RuleContext) -> tuple[str, str]:
    """(when, why) from the job's rules, or its own ``when``."""
    if not job.rules:
        return job.when, f"when: {job.when}" if job.when != "on_success" else ""
    env = {**ctx.variables, **job.variables}
    for i, rule in enumerate(job.rules, 1):
        if rule.if_ is not None and not parse_if(rule.if_).evaluate(env):
            continue
        if rule.branch and not ctx.branch_matches(list(rule.branch)):
            continue
        if rule.changes and not ctx.changes_match(list(rule.changes)):
            continue
        return rule.when, f"rule {i} (line {rule.line}) matched: when {rule.when}"
    return "never", "no rule matched"


def make_plan(pipeline: Pipeline, ctx: RuleContext, targets: list[str] | None = None,
              only: list[str] | None = None, manual: list[str] | None = None) -> Plan:
    """Decide which jobs run. ``targets``: these and what they need; ``only``: these alone."""
    for name in [*(targets or []), *(only or []), *(manual or [])]:
        if name not in pipeline.jobs:
            raise KeyError(name)
    if only:
        selected = set(only)
    elif targets:
        selected = pipeline.upstream(set(targets))
    else:
        selected = set(pipeline.jobs)
    asked = set(manual or []) | set(targets or []) | set(only or [])
    entries: dict[str, PlanEntry] = {}
    for name in pipeline.order():
        job = pipeline.jobs[name]
        if name not in selected:
            entries[name] = PlanEntry(name, False, "not selected")
            continue
        when, why = _when(job, ctx)
        if when == "never":
            entries[name] = PlanEntry(name, False, why or "when: never", when)
        elif when == "manual" and name not in asked:
            entries[name] = PlanEntry(name, False, f"manual job: run it with --manual {name}", when)
        else:
            blocked = [d for d in pipeline.deps(name)
                       if d in entries and not entries[d].included and entries[d].when == "manual"
                       or d in entries and entries[d].reason.startswith("waits for")]
            if blocked:
                entries[name] = PlanEntry(name, False, f"waits for manual job {blocked[0]}", when)
            else:
                entries[name] = PlanEntry(name, True, why, when)
    return Plan(pipeline, entries)
