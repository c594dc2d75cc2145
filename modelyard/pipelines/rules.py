"""When a job runs: GitLab-style ``rules`` (``if``, ``branch``, ``changes``, ``when``).

Rules are read in order and the first that matches decides the job's ``when``; a job with rules
none of which match is left out of the run, as in GitLab CI. ``if`` takes GitLab's expression
language: ``$VAR == "x"``, ``!=``, ``=~ /re/``, ``!~ /re/``, a bare ``$VAR`` (set and non-empty),
``null``, ``&&``, ``||`` and parentheses. ``branch`` is a glob (or list of globs) on the branch,
``changes`` a list of globs on the files changed since a base commit.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

__all__ = ["IfExpression", "RuleContext", "RuleError", "parse_if", "WHEN_VALUES"]

WHEN_VALUES = ("on_success", "always", "never", "manual")


class RuleError(ValueError):
    pass


_TOKEN_PATTERN = (r"""
    \s*(?:
      (?P<var>\$\{?[A-Za-z_][A-Za-z0-9_]*\}?)
    | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<re>/(?:[^/\\]|\\.)*/[imsx]*)
    | (?P<op>==|!=|=~|!~|&&|\|\||\(|\))
    | (?P<null>null\b)
    )""")
_token = None


def _token_re() -> re.Pattern:
    global _token
    if _token is None:  # compiled on first use: most pipelines have no `if:` rule
        _token = re.compile(_TOKEN_PATTERN, re.VERBOSE)
    return _token


@dataclass(frozen=True)
class IfExpression:
    text: str
    evaluate: Callable[[dict], bool]


def parse_if(text: str) -> IfExpression:
    """Parse a GitLab ``if:`` expression; raises :class:`RuleError` if it does not parse."""
    tokens = []
    pos = 0
    src = str(text)
    while pos < len(src):
        if src[pos:].strip() == "":
            break
        m = _token_re().match(src, pos)
        if not m or m.end() == pos:
            raise RuleError(f"cannot parse rule expression {text!r} at {src[pos:pos + 20]!r}")
        kind = m.lastgroup
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    parser = _Parser(tokens, src)
    fn = parser.expr()
    if parser.i != len(tokens):
        raise RuleError(f"unexpected {tokens[parser.i][1]!r} in rule expression {text!r}")
    return IfExpression(src, fn)


class _Parser:
    def __init__(self, tokens, text):
        self.tokens, self.text, self.i = tokens, text, 0

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else (None, None)

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def expr(self):
        left = self.conj()
        while self.peek() == ("op", "||"):
            self.take()
            right = self.conj()
            left = (lambda a, b: lambda env: a(env) or b(env))(left, right)
        return left

    def conj(self):
        left = self.atom()
        while self.peek() == ("op", "&&"):
            self.take()
            right = self.atom()
            left = (lambda a, b: lambda env: a(env) and b(env))(left, right)
        return left

    def atom(self):
        kind, value = self.take()
        if (kind, value) == ("op", "("):
            inner = self.expr()
            if self.take() != ("op", ")"):
                raise RuleError(f"missing ')' in rule expression {self.text!r}")
            return inner
        left = self.operand(kind, value)
        op_kind, op = self.peek()
        if op_kind == "op" and op in ("==", "!=", "=~", "!~"):
            self.take()
            rkind, rvalue = self.take()
            if op in ("=~", "!~"):
                if rkind != "re":
                    raise RuleError(f"'{op}' needs a /regex/ in rule expression {self.text!r}")
                body, _, flags = rvalue[1:].rpartition("/")
                rx = re.compile(body, re.IGNORECASE if "i" in flags else 0)
                positive = op == "=~"
                return lambda env: (left(env) is not None and bool(rx.search(left(env)))) == positive
            right = self.operand(rkind, rvalue)
            return (lambda env: left(env) == right(env)) if op == "==" else (lambda env: left(env) != right(env))
        if kind != "var":
            raise RuleError(f"expected a comparison in rule expression {self.text!r}")
        return lambda env: bool(left(env))

    def operand(self, kind, value):
        if kind == "var":
            name = value.strip("${}")
            return lambda env: env.get(name)
        if kind == "str":
            text = value[1:-1].encode().decode("unicode_escape")
            return lambda env: text
        if kind == "null":
            return lambda env: None
        raise RuleError(f"unexpected {value!r} in rule expression {self.text!r}")


@dataclass
class RuleContext:
    """What rules are evaluated against: variables, the branch and the changed files."""

    root: Path
    variables: dict = field(default_factory=dict)
    branch: str | None = None
    changes_since: str | None = None
    _changed: list[str] | None = None

    @classmethod
    def detect(cls, root: Path, variables: dict, changes_since: str | None = None) -> "RuleContext":
        env = {**os.environ, **variables}
        # Outside CI the branch is asked of git only when a rule needs it (branch_matches).
        branch = env.get("CI_COMMIT_BRANCH") or env.get("CI_COMMIT_REF_NAME")
        base = changes_since or _ci_base(env)
        return cls(root=root, variables=env, branch=(branch or "").strip() or None, changes_since=base)

    def changed_files(self) -> list[str] | None:
        """Files changed since the base commit (plus uncommitted and untracked ones); None outside git."""
        if self._changed is None:
            base = self.changes_since or "HEAD"
            diff = _git(self.root, "diff", "--name-only", base, "--relative")
            if diff is None:
                return None
            untracked = _git(self.root, "ls-files", "--others", "--exclude-standard") or ""
            self._changed = sorted({p for p in (diff + "\n" + untracked).splitlines() if p.strip()})
        return self._changed

    def branch_matches(self, patterns: list[str]) -> bool:
        import fnmatch

        if self.branch is None:
            self.branch = (_git(self.root, "rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None
        return self.branch is not None and any(fnmatch.fnmatchcase(self.branch, p) for p in patterns)

    def changes_match(self, patterns: list[str]) -> bool:
        changed = self.changed_files()
        if changed is None:
            return True  # no git history to compare with: GitLab also treats `changes` as true then
        return any(_glob_match(path, p) for path in changed for p in patterns)


def _glob_match(path: str, pattern: str) -> bool:
    import fnmatch

    if fnmatch.fnmatchcase(path, pattern):
        return True
    if pattern.endswith("/**/*") or pattern.endswith("/**"):
        prefix = pattern.split("/**", 1)[0]
        return path.startswith(prefix.rstrip("/") + "/")
    return "**" in pattern and fnmatch.fnmatchcase(path, pattern.replace("**/", "*"))


def _ci_base(env: dict) -> str | None:
    before = env.get("CI_COMMIT_BEFORE_SHA")
    if before and set(before) != {"0"}:
        return before
    return env.get("CI_MERGE_REQUEST_DIFF_BASE_SHA") or None


def _git(root: Path, *args: str) -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None
