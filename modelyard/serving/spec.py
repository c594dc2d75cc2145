"""What a model server serves: a deployment spec, from a model URI, a file, or the server's record.

A spec names a registered model and its *arms*: each a fixed version or an alias (followed as it
moves), with a traffic weight; plus an optional shadow arm that gets a copy of the traffic and
whose answers are logged, never returned.

A deployment file is YAML (or JSON)::

    name: iris-prod
    model: iris
    versions:            # or just `alias: champion`
      - alias: champion
        weight: 90
      - version: 4
        weight: 10
    shadow:
      version: 5         # or `alias: challenger`, or simply `shadow: 5`

A ``modelyard.yml`` may hold several under ``deployments:`` (a mapping of name to spec, or a list
of specs with names); ``--name`` picks one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Arm", "DeploymentSpec", "SpecError", "parse_model_uri"]

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w\-]+)|/(?P<version>\d+))/?$")


class SpecError(ValueError):
    """A deployment spec that cannot be served, with a message for the user."""


@dataclass(frozen=True)
class Arm:
    """A version or an alias of the model, with its share of the traffic."""

    version: str | None = None
    alias: str | None = None
    weight: float = 100

    def __post_init__(self):
        if (self.version is None) == (self.alias is None):
            raise SpecError("each arm names exactly one of 'version' and 'alias'")
        if self.weight < 0:
            raise SpecError("a weight is a number >= 0")

    @property
    def label(self) -> str:
        return f"@{self.alias}" if self.alias else f"v{self.version}"

    def to_record(self) -> dict:
        ident = {"alias": self.alias} if self.alias else {"version": self.version}
        return {**ident, "weight": _plain(self.weight)}


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    model_name: str
    arms: tuple[Arm, ...]
    shadow: Arm | None = None

    def __post_init__(self):
        if not self.arms:
            raise SpecError(f"deployment {self.name!r} serves no version")
        if sum(a.weight for a in self.arms) <= 0:
            raise SpecError(f"the weights of deployment {self.name!r} add up to 0")

    # -- sources ------------------------------------------------------------------------------------
    @classmethod
    def from_model_uri(cls, uri: str, name: str | None = None) -> "DeploymentSpec":
        model, alias, version = parse_model_uri(uri)
        arm = Arm(alias=alias) if alias else Arm(version=version)
        return cls(name or f"{model}-{alias or 'v' + version}", model, (arm,))

    @classmethod
    def from_file(cls, path: str | Path, name: str | None = None) -> "DeploymentSpec":
        import yaml

        try:
            doc = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise SpecError(f"cannot read {path}: {exc}") from None
        if not isinstance(doc, dict):
            raise SpecError(f"{path}: a deployment file is a mapping")
        if "deployments" in doc:
            doc = _pick(doc["deployments"], name, path)
        elif name and doc.get("name") not in (None, name):
            raise SpecError(f"{path} describes deployment {doc.get('name')!r}, not {name!r}")
        return cls.from_mapping(doc, name, str(path))

    @classmethod
    def from_mapping(cls, doc: dict, name: str | None = None, where: str = "deployment") -> "DeploymentSpec":
        known = {"name", "model", "model_name", "alias", "version", "versions", "shadow"}
        unknown = set(doc) - known
        if unknown:
            raise SpecError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        model = doc.get("model") or doc.get("model_name")
        if not model or not isinstance(model, str):
            raise SpecError(f"{where}: 'model' (the registered model's name) is required")
        name = name or doc.get("name")
        if not name:
            raise SpecError(f"{where}: 'name' is required (or pass --name)")
        if doc.get("versions") is not None:
            if doc.get("alias") is not None or doc.get("version") is not None:
                raise SpecError(f"{where}: give 'versions' or 'alias'/'version', not both")
            if not isinstance(doc["versions"], list):
                raise SpecError(f"{where}: 'versions' is a list of {{version or alias, weight}}")
            arms = tuple(_arm(entry, f"{where}: versions[{i}]") for i, entry in enumerate(doc["versions"]))
        elif doc.get("alias") is not None or doc.get("version") is not None:
            arms = (_arm({k: doc[k] for k in ("alias", "version") if doc.get(k) is not None}, where),)
        else:
            raise SpecError(f"{where}: say what to serve: 'alias', 'version' or 'versions'")
        shadow = doc.get("shadow")
        if shadow is not None and not isinstance(shadow, dict):
            shadow = {"version": shadow}
        try:
            return cls(str(name), model, arms, _arm(shadow, f"{where}: shadow") if shadow is not None else None)
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}") from None

    @classmethod
    def from_record(cls, record: dict) -> "DeploymentSpec":
        """The spec of a deployment as the server returns it."""
        arms = tuple(Arm(version=a.get("version"), alias=a.get("alias"), weight=a.get("weight", 1))
                     for a in record["versions"])
        shadow = None
        if record.get("shadow_version"):
            shadow = Arm(version=str(record["shadow_version"]))
        elif record.get("shadow_alias"):
            shadow = Arm(alias=record["shadow_alias"])
        return cls(record["name"], record["model_name"], arms, shadow)

    def to_record(self) -> dict:
        """The body of ``POST /api/modelyard/v1/deployments``."""
        record = {"name": self.name, "model_name": self.model_name, "versions": [a.to_record() for a in self.arms]}
        if self.shadow is not None:
            record["shadow_alias" if self.shadow.alias else "shadow_version"] = self.shadow.alias or self.shadow.version
        return record

    def describe(self) -> str:
        total = sum(a.weight for a in self.arms)
        parts = [f"{a.label} {100 * a.weight / total:.4g}%" for a in self.arms]
        if self.shadow:
            parts.append(f"shadow {self.shadow.label}")
        return f"{self.model_name}: " + ", ".join(parts)


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> (name, alias, version)."""
    m = _MODEL_URI.match(uri.strip())
    if not m:
        raise SpecError(f"{uri!r} is not a registered model URI: use models:/NAME@ALIAS or models:/NAME/VERSION")
    return m["name"], m["alias"], m["version"]


def _arm(entry, where: str) -> Arm:
    if not isinstance(entry, dict):
        raise SpecError(f"{where}: an arm is a mapping with 'version' or 'alias', and 'weight'")
    unknown = set(entry) - {"version", "alias", "weight"}
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    version, alias, weight = entry.get("version"), entry.get("alias"), entry.get("weight", 100)
    if version is not None and not re.fullmatch(r"\d+", str(version).strip()):
        raise SpecError(f"{where}: version {version!r} is not a version number")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise SpecError(f"{where}: weight {weight!r} is not a number")
    try:
        return Arm(version=str(version).strip() if version is not None else None,
                   alias=str(alias) if alias is not None else None, weight=weight)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None


def _pick(deployments, name: str | None, path) -> dict:
    if isinstance(deployments, dict):
        entries = []
        for key, spec in deployments.items():
            if not isinstance(spec, dict):
                raise SpecError(f"{path}: deployment {key!r} is not a mapping")
            entries.append({**spec, "name": spec.get("name", key)})
    elif isinstance(deployments, list):
        entries = [d for d in deployments if isinstance(d, dict)]
    else:
        raise SpecError(f"{path}: 'deployments' is a mapping of name to deployment, or a list")
    if name is None:
        if len(entries) != 1:
            raise SpecError(f"{path} holds {len(entries)} deployments: pass --name "
                            f"({', '.join(str(e.get('name')) for e in entries)})")
        return entries[0]
    for entry in entries:
        if entry.get("name") == name:
            return entry
    raise SpecError(f"{path} has no deployment named {name!r}")


def _plain(weight: float):
    return int(weight) if float(weight).is_integer() else weight
