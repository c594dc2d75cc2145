"""The model registry: registered models, their versions, tags and aliases.

Everything here is keyed by the registered model's name, so a rename rewrites the name in every
registry table inside one transaction. Version numbers are never reused: a deleted version keeps
its row (flagged ``deleted``) so the next version is still ``max + 1``. Creating a version locks
the registered model's row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's single writer
already serialises writes), so concurrent registrations get distinct, consecutive numbers.

A version's ``source`` is what the client sent; ``storage_location`` is where its files are,
resolved once at creation (``runs:/<run>/<path>`` to the run's artifact URI plus the path,
``models:/<model_id>`` to the logged model's artifact location), and is what
``get-download-uri`` returns. Filters and orderings live in :mod:`modelyard.store._registry_search`.
"""
from __future__ import annotations

import re
from typing import Iterable
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa

from modelyard.errors import MlflowError
from modelyard.store import search
from modelyard.store._common import now_ms
from modelyard.store._registry_search import (
    DEFAULT_VERSION_ORDER, MODELS_SEARCH, PROMPT_TAG, VERSIONS_SEARCH, model_condition, model_order,
    prompt_tag_exists, version_condition, version_order, wants_prompts,
)
from modelyard.store.db import Database
from modelyard.store.schema import experiments, logged_models, runs
from modelyard.store.schema import model_version_tags as MVT
from modelyard.store.schema import model_versions as MV
from modelyard.store.schema import registered_model_aliases as RMA
from modelyard.store.schema import registered_model_tags as RMT
from modelyard.store.schema import registered_models as RM

__all__ = [
    "RegistryStore", "MODELS_SEARCH", "VERSIONS_SEARCH", "STAGES", "ACTIVE_STAGES", "PROMPT_TAG",
    "canonical_stage", "check_source", "parse_version",
]

STAGES = ("None", "Staging", "Production", "Archived")
ACTIVE_STAGES = ("Staging", "Production")
_MAX_VERSION = 2**31 - 1  # model_versions.version is a 32-bit integer
_CHUNK = 500  # names per IN (...) when loading tags and aliases for a page
_INTEGER = re.compile(r"[+-]?[0-9]+")


def canonical_stage(stage: str) -> str:
    """``"production"`` -> ``"Production"``; anything else is a 400, with MLflow's wording."""
    for s in STAGES:
        if isinstance(stage, str) and stage.lower() == s.lower():
            return s
    raise MlflowError.invalid(f"Invalid Model Version stage: {stage}. Value must be one of {', '.join(STAGES)}.")


def parse_version(value) -> int:
    """A version arrives as a string (``"3"``); it must be an integer."""
    text = value.strip() if isinstance(value, str) else ""
    if not _INTEGER.fullmatch(text):
        raise MlflowError.invalid(f"Parameter 'version' must be an integer, got '{value}'.")
    return int(text)


def _model_not_found(name: str) -> MlflowError:
    return MlflowError.not_found(f"Registered Model with name={name} not found")


def _version_not_found(name: str, version: int) -> MlflowError:
    return MlflowError.not_found(f"Model Version (name={name}, version={version}) not found")


def _invalid_source(source: str, id_name: str) -> MlflowError:
    return MlflowError.invalid(
        f"Invalid model version source: '{source}'. The {id_name} request parameter must identify "
        "the resource that contains the source.")


def _chunks(items: list, size: int = _CHUNK) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class RegistryStore:
    """Registered models and model versions, in MLflow's wire shape."""

    def __init__(self, db: Database):
        self.db = db

    # -- registered models: writes --------------------------------------------------------------
    async def create_model(self, project: str, name: str, tags: list[dict], description: str | None) -> dict:
        def create(conn):
            existing = conn.execute(sa.select(RM.c.name).where(RM.c.project == project, RM.c.name == name)).first()
            if existing is not None:
                raise _already_exists(conn, project, name, tags)
            t = now_ms()
            conn.execute(RM.insert().values(project=project, name=name, creation_time=t, last_updated_time=t, description=description))
            if tags:
                conn.execute(RMT.insert(), [{"project": project, "name": name, "key": k, "value": v} for k, v in _dedupe(tags).items()])
            return _model_dicts(conn, project, [_model_row(conn, project, name)])[0]

        try:
            return await self.db.write(create)
        except sa.exc.IntegrityError:
            # Two creations raced past the check (PostgreSQL): the loser hears what the client expects.
            raise MlflowError.exists(f"Registered Model (name={name}) already exists.") from None

    async def rename_model(self, project: str, name: str, new_name: str) -> dict:
        def rename(conn):
            _model_row(conn, project, name, lock=True)
            if new_name != name:
                if conn.execute(sa.select(RM.c.name).where(RM.c.project == project, RM.c.name == new_name)).first() is not None:
                    raise MlflowError.exists(f"Registered Model (name={new_name}) already exists.")
                t = now_ms()
                conn.execute(RM.update().where(RM.c.project == project, RM.c.name == name).values(name=new_name, last_updated_time=t))
                conn.execute(MV.update().where(MV.c.project == project, MV.c.name == name).values(name=new_name, last_updated_time=t))
                for table in (RMT, RMA, MVT):
                    conn.execute(table.update().where(table.c.project == project, table.c.name == name).values(name=new_name))
            return _model_dicts(conn, project, [_model_row(conn, project, new_name)])[0]

        try:
            return await self.db.write(rename)
        except sa.exc.IntegrityError:
            raise MlflowError.exists(f"Registered Model (name={new_name}) already exists.") from None

    async def update_model(self, project: str, name: str, description: str | None) -> dict:
        def update(conn):
            _model_row(conn, project, name, lock=True)
            values = {"last_updated_time": now_ms()}
            if description is not None:
                values["description"] = description
            conn.execute(RM.update().where(RM.c.project == project, RM.c.name == name).values(**values))
            return _model_dicts(conn, project, [_model_row(conn, project, name)])[0]

        return await self.db.write(update)

    async def delete_model(self, project: str, name: str) -> None:
        """Removes the model with all its versions (deleted ones too), tags and aliases."""

        def delete(conn):
            _model_row(conn, project, name, lock=True)
            for table in (MVT, MV, RMA, RMT, RM):
                conn.execute(table.delete().where(table.c.project == project, table.c.name == name))

        await self.db.write(delete)

    async def set_model_tag(self, project: str, name: str, key: str, value: str) -> None:
        def set_tag(conn):
            _model_row(conn, project, name)
            conn.execute(self.db.upsert(RMT, ["project", "name", "key"], {"project": project, "name": name, "key": key, "value": value},
                                        update=["value"]))

        await self.db.write(set_tag)

    async def delete_model_tag(self, project: str, name: str, key: str) -> None:
        """Deleting a tag the model does not have is not an error (as in MLflow)."""

        def delete_tag(conn):
            _model_row(conn, project, name)
            conn.execute(RMT.delete().where(RMT.c.project == project, RMT.c.name == name, RMT.c.key == key))

        await self.db.write(delete_tag)

    async def set_alias(self, project: str, name: str, alias: str, version: int) -> None:
        def set_alias(conn):
            _version_row(conn, project, name, version)
            conn.execute(self.db.upsert(RMA, ["project", "name", "alias"], {"project": project, "name": name, "alias": alias, "version": version},
                                        update=["version"]))

        await self.db.write(set_alias)

    async def delete_alias(self, project: str, name: str, alias: str) -> None:
        def delete_alias(conn):
            _model_row(conn, project, name)
            conn.execute(RMA.delete().where(RMA.c.project == project, RMA.c.name == name, RMA.c.alias == alias))

        await self.db.write(delete_alias)

    # -- registered models: reads ---------------------------------------------------------------
    async def get_model(self, project: str, name: str) -> dict:
        return await self.db.read(lambda conn: _model_dicts(conn, project, [_model_row(conn, project, name)])[0])

    async def get_latest_versions(self, project: str, name: str, stages: list[str]) -> list[dict]:
        wanted = {canonical_stage(s) for s in stages} if stages else set(STAGES)

        def latest(conn):
            _model_row(conn, project, name)
            rows = [r for r in _latest_rows(conn, project, [name]).get(name, []) if r.current_stage in wanted]
            return _version_dicts(conn, project, rows)

        return await self.db.read(latest)

    async def get_version_by_alias(self, project: str, name: str, alias: str) -> dict:
        def by_alias(conn):
            _model_row(conn, project, name)
            if alias.lower() == "latest":
                row = conn.execute(_live_versions(project).where(MV.c.project == project, MV.c.name == name)
                                   .order_by(MV.c.version.desc()).limit(1)).first()
                if row is None:
                    raise MlflowError.not_found(f"Latest version not found for model {name}.")
                return _version_dicts(conn, project, [row])[0]
            found = conn.execute(sa.select(RMA.c.version).where(RMA.c.project == project, RMA.c.name == name, RMA.c.alias == alias)).first()
            if found is None:
                # MLflow answers an unknown alias with INVALID_PARAMETER_VALUE, not a 404.
                raise MlflowError.invalid(f"Registered model alias {alias} not found.")
            return _version_dicts(conn, project, [_version_row(conn, project, name, found.version)])[0]

        return await self.db.read(by_alias)

    async def search_models(self, project: str, filter_string: str | None, max_results: int, order_by: list[str],
                            page_token: str | None) -> tuple[list[dict], str | None]:
        comparisons = search.parse_filter(filter_string, MODELS_SEARCH)
        order = model_order(order_by)
        offset = search.decode_page_token(page_token)
        prompts = wants_prompts(comparisons)

        def run(conn):
            q = sa.select(RM)
            for c in comparisons:
                if not (c.kind == "tag" and c.key == PROMPT_TAG):
                    q = q.where(model_condition(c))
            # Prompts are registered models tagged mlflow.prompt.is_prompt=true; a search returns
            # either prompts or models, never both (the client adds the tag filter to every search).
            is_prompt = prompt_tag_exists(RM)
            q = q.where(is_prompt if prompts else ~is_prompt)
            rows = conn.execute(q.order_by(*order).limit(max_results + 1).offset(offset)).all()
            token = search.encode_page_token(offset + max_results) if len(rows) > max_results else None
            return _model_dicts(conn, project, rows[:max_results]), token

        return await self.db.read(run)

    # -- model versions: writes -----------------------------------------------------------------
    async def create_version(self, project: str, name: str, source: str, run_id: str | None, tags: list[dict],
                             run_link: str | None, description: str | None, model_id: str | None) -> dict:
        check_source(source)

        def create(conn):
            # The row lock makes concurrent creations on PostgreSQL wait for each other, so each
            # reads the max version its predecessor committed.
            _model_row(conn, project, name, lock=True)
            src, location, rid, mid = _resolve_source(conn, project, source, run_id, model_id)
            latest = conn.execute(sa.select(sa.func.max(MV.c.version)).where(MV.c.project == project, MV.c.name == name)).scalar()
            version = (latest or 0) + 1
            t = now_ms()
            conn.execute(MV.insert().values(
                project=project, name=name, version=version, creation_time=t, last_updated_time=t, description=description,
                current_stage="None", source=src, storage_location=location, run_id=rid, run_link=run_link,
                status="READY", model_id=mid, deleted=False))
            if tags:
                conn.execute(MVT.insert(), [{"project": project, "name": name, "version": version, "key": k, "value": v}
                                            for k, v in _dedupe(tags).items()])
            conn.execute(RM.update().where(RM.c.project == project, RM.c.name == name).values(last_updated_time=t))
            return _version_dicts(conn, project, [_version_row(conn, project, name, version)])[0]

        for attempt in range(3):
            try:
                return await self.db.write(create)
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise MlflowError(f"Model Version creation error (name={name}). Giving up after 3 attempts.",
                                      "INTERNAL_ERROR") from None
        raise AssertionError("unreachable")

    async def update_version(self, project: str, name: str, version: int, description: str | None) -> dict:
        def update(conn):
            _version_row(conn, project, name, version)
            values = {"last_updated_time": now_ms()}
            if description is not None:
                values["description"] = description
            conn.execute(MV.update().where(MV.c.project == project, MV.c.name == name, MV.c.version == version).values(**values))
            return _version_dicts(conn, project, [_version_row(conn, project, name, version)])[0]

        return await self.db.write(update)

    async def transition_stage(self, project: str, name: str, version: int, stage: str, archive_existing: bool) -> dict:
        stage = canonical_stage(stage)
        if archive_existing and stage not in ACTIVE_STAGES:
            raise MlflowError.invalid(
                "Model version transition cannot archive existing model versions because "
                f"'{stage}' is not an Active stage. Valid stages are {list(ACTIVE_STAGES)}")

        def transition(conn):
            _model_row(conn, project, name, lock=True)
            _version_row(conn, project, name, version)
            t = now_ms()
            if archive_existing:
                conn.execute(MV.update().where(
                    MV.c.project == project, MV.c.name == name, MV.c.version != version, MV.c.current_stage == stage,
                    MV.c.deleted == sa.false()).values(current_stage="Archived", last_updated_time=t))
            conn.execute(MV.update().where(MV.c.project == project, MV.c.name == name, MV.c.version == version)
                         .values(current_stage=stage, last_updated_time=t))
            conn.execute(RM.update().where(RM.c.project == project, RM.c.name == name).values(last_updated_time=t))
            return _version_dicts(conn, project, [_version_row(conn, project, name, version)])[0]

        return await self.db.write(transition)

    async def delete_version(self, project: str, name: str, version: int) -> None:
        """Flags the version deleted (its number stays taken) and drops its tags and aliases."""

        def delete(conn):
            _model_row(conn, project, name, lock=True)
            _version_row(conn, project, name, version)
            t = now_ms()
            conn.execute(MV.update().where(MV.c.project == project, MV.c.name == name, MV.c.version == version)
                         .values(deleted=True, last_updated_time=t))
            conn.execute(MVT.delete().where(MVT.c.project == project, MVT.c.name == name, MVT.c.version == version))
            conn.execute(RMA.delete().where(RMA.c.project == project, RMA.c.name == name, RMA.c.version == version))
            conn.execute(RM.update().where(RM.c.project == project, RM.c.name == name).values(last_updated_time=t))

        await self.db.write(delete)

    async def set_version_tag(self, project: str, name: str, version: int, key: str, value: str) -> None:
        def set_tag(conn):
            _version_row(conn, project, name, version)
            conn.execute(self.db.upsert(MVT, ["project", "name", "version", "key"],
                                        {"project": project, "name": name, "version": version, "key": key, "value": value},
                                        update=["value"]))

        await self.db.write(set_tag)

    async def delete_version_tag(self, project: str, name: str, version: int, key: str) -> None:
        def delete_tag(conn):
            _version_row(conn, project, name, version)
            conn.execute(MVT.delete().where(MVT.c.project == project, MVT.c.name == name, MVT.c.version == version, MVT.c.key == key))

        await self.db.write(delete_tag)

    # -- model versions: reads ------------------------------------------------------------------
    async def get_version(self, project: str, name: str, version: int) -> dict:
        return await self.db.read(lambda conn: _version_dicts(conn, project, [_version_row(conn, project, name, version)])[0])

    async def get_download_uri(self, project: str, name: str, version: int) -> str:
        def uri(conn):
            row = _version_row(conn, project, name, version)
            return row.storage_location or row.source

        return await self.db.read(uri)

    async def search_versions(self, project: str, filter_string: str | None, max_results: int, order_by: list[str],
                              page_token: str | None) -> tuple[list[dict], str | None]:
        comparisons = search.parse_filter(filter_string, VERSIONS_SEARCH)
        order = version_order(order_by or list(DEFAULT_VERSION_ORDER))
        offset = search.decode_page_token(page_token)
        prompts = wants_prompts(comparisons)
        conditions = [version_condition(c) for c in comparisons if not (c.kind == "tag" and c.key == PROMPT_TAG)]

        def run(conn):
            is_prompt = prompt_tag_exists(MV)
            q = _live_versions(project).where(*conditions, is_prompt if prompts else ~is_prompt)
            rows = conn.execute(q.order_by(*order).limit(max_results + 1).offset(offset)).all()
            token = search.encode_page_token(offset + max_results) if len(rows) > max_results else None
            return _version_dicts(conn, project, rows[:max_results]), token

        return await self.db.read(run)


# -- rows -----------------------------------------------------------------------------------------
def _model_row(conn, project: str, name: str, lock: bool = False):
    q = sa.select(RM).where(RM.c.project == project, RM.c.name == name)
    if lock:
        q = q.with_for_update()  # rendered on PostgreSQL; SQLite's writer is already exclusive
    row = conn.execute(q).first()
    if row is None:
        raise _model_not_found(name)
    return row


def _live_versions(project: str):
    return sa.select(MV).where(MV.c.project == project, MV.c.deleted == sa.false())


def _version_row(conn, project: str, name: str, version: int):
    row = None
    if 0 < version <= _MAX_VERSION:
        row = conn.execute(_live_versions(project).where(MV.c.project == project, MV.c.name == name, MV.c.version == version)).first()
    if row is None:
        raise _version_not_found(name, version)
    return row


def _already_exists(conn, project: str, name: str, new_tags: list[dict]) -> MlflowError:
    old_is_prompt = conn.execute(sa.select(RMT.c.value).where(
        RMT.c.project == project, RMT.c.name == name, RMT.c.key == PROMPT_TAG, RMT.c.value == "true")).first() is not None
    new_is_prompt = any(t["key"] == PROMPT_TAG and t["value"] == "true" for t in new_tags)
    if old_is_prompt != new_is_prompt:
        old, new = ("prompt", "registered model") if old_is_prompt else ("registered model", "prompt")
        return MlflowError.exists(
            f"Tried to create a {new} with name {name!r}, but the name is already taken by a {old}. "
            "MLflow does not allow creating a model and a prompt with the same name.")
    return MlflowError.exists(f"{'Prompt' if new_is_prompt else 'Registered Model'} (name={name}) already exists.")


def _dedupe(tags: list[dict]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in tags}


# -- sources --------------------------------------------------------------------------------------
def check_source(source: str) -> None:
    """Rejects sources that climb out of where they point (``..``, ``.``, NUL), however encoded."""
    decoded = source
    for _ in range(10):
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    if "\x00" in decoded or any(p in ("..", ".") for p in re.split(r"[/\\]", decoded)):
        raise MlflowError.invalid(
            f"Invalid model version source: '{source}'. If supplying a source as an http, https, local file "
            "path, ftp, objectstore, or mlflow-artifacts uri, an absolute path must be provided without "
            "relative path references present. Please provide an absolute path.")


def _resolve_source(conn, project: str, source: str, run_id: str | None, model_id: str | None):
    """(source, storage_location, run_id, model_id) for a new version, or a 4xx."""
    parts = urlsplit(source)
    scheme = parts.scheme.lower()
    location = source
    if scheme == "runs":
        if parts.netloc:
            raise _invalid_source(source, "run_id")
        src_run, _, path = parts.path.lstrip("/").partition("/")
        if not src_run or (run_id and run_id != src_run):
            raise _invalid_source(source, "run_id")
        run = _run(conn, project, src_run)
        if run is None:
            raise MlflowError.not_found(f"Run with id={src_run} not found")
        path = path.strip("/")
        location = run.artifact_uri.rstrip("/") + (f"/{path}" if path else "")
        run_id = src_run
    elif scheme == "models":
        if parts.netloc:
            raise MlflowError.invalid(f"Invalid model version source: '{source}'. Registered model sources "
                                      "must use the active model registry.")
        path = parts.path.lstrip("/")
        if "/" not in path and "@" not in path:
            # models:/<model_id>: the files are the logged model's.
            if model_id and model_id != path:
                raise _invalid_source(source, "model_id")
            model = _logged_model(conn, project, path)
            return source, model.artifact_location, run_id or model.source_run_id, path
        # models:/<name>/<version|stage|latest> or models:/<name>@<alias>: another version's files.
        row = _referenced_version(conn, project, source, path)
        if (run_id and run_id != (row.run_id or "")) or (model_id and model_id != (row.model_id or "")):
            raise MlflowError.invalid(f"Invalid model version source: '{source}'. The run_id and model_id "
                                      "request parameters must match the referenced model version.")
        return (f"models:/{row.name}/{row.version}", row.storage_location or row.source,
                run_id or row.run_id, model_id or row.model_id)
    elif scheme in ("", "file") or re.match(r"^[A-Za-z]:", source):
        run = _run(conn, project, run_id) if run_id else None
        if not (run and _is_local(run.artifact_uri) and _within(_as_file_uri(source), _as_file_uri(run.artifact_uri))):
            raise MlflowError.invalid(
                f"Invalid model version source: '{source}'. To use a local path as a model version source, "
                "the run_id request parameter has to be specified and the local path has to be contained "
                "within the artifact directory of the run specified by the run_id.")
    elif scheme == "mlflow-artifacts":
        # A proxied URI could name any experiment's files: it must lie under the run's or the
        # logged model's own artifacts.
        run = _run(conn, project, run_id) if run_id else None
        roots = [run.artifact_uri] if run else []
        if model_id:
            roots.append(_logged_model(conn, project, model_id).artifact_location)
        if not any(_within(source, root) for root in roots):
            raise _invalid_source(source, "model_id" if model_id else "run_id")
    if model_id:
        run_id = run_id or _logged_model(conn, project, model_id).source_run_id
    return source, location, run_id, model_id


def _run(conn, project: str, run_id: str):
    """The run's artifact URI, if the run is in ``project`` (another project's run is missing)."""
    return conn.execute(sa.select(runs.c.artifact_uri)
                        .join(experiments, experiments.c.experiment_id == runs.c.experiment_id)
                        .where(runs.c.run_uuid == run_id, experiments.c.project == project)).first()


def _logged_model(conn, project: str, model_id: str):
    row = conn.execute(sa.select(logged_models.c.artifact_location, logged_models.c.source_run_id,
                                 logged_models.c.lifecycle_stage)
                       .join(experiments, experiments.c.experiment_id == logged_models.c.experiment_id)
                       .where(logged_models.c.model_id == model_id, experiments.c.project == project)).first()
    if row is None or row.lifecycle_stage != "active":
        raise MlflowError.not_found(f"Logged model with ID '{model_id}' not found.")
    return row


def _referenced_version(conn, project: str, source: str, path: str):
    if "@" in path and "/" not in path:
        name, alias = path.split("@", 1)
        found = conn.execute(sa.select(RMA.c.version).where(RMA.c.project == project, RMA.c.name == name, RMA.c.alias == alias)).first()
        if found is None:
            raise MlflowError.invalid(f"Registered model alias {alias} not found.")
        return _version_row(conn, project, name, found.version)
    name, _, ref = path.rpartition("/")
    if not name or "/" in name:
        raise MlflowError.invalid(f"Invalid model version source: '{source}'.")
    q = _live_versions(project).where(MV.c.project == project, MV.c.name == name)
    if _INTEGER.fullmatch(ref):
        return _version_row(conn, project, name, int(ref))
    if ref.lower() != "latest":
        q = q.where(MV.c.current_stage == canonical_stage(ref))
    row = conn.execute(q.order_by(MV.c.version.desc()).limit(1)).first()
    if row is None:
        raise MlflowError.not_found(f"No model version of {name} matches '{ref}'.")
    return row


def _is_local(uri: str) -> bool:
    scheme = urlsplit(uri).scheme.lower()
    return scheme in ("", "file")


def _as_file_uri(uri: str) -> str:
    return uri if urlsplit(uri).scheme else "file://" + uri


def _within(source: str, root: str) -> bool:
    """Is ``source`` ``root`` or below it, comparing decoded path segments?"""

    def split(uri: str):
        p = urlsplit(uri)
        return p.scheme.lower(), p.netloc.lower(), [unquote(s) for s in p.path.split("/") if s]

    s_scheme, s_host, s_parts = split(source)
    r_scheme, r_host, r_parts = split(root)
    return (s_scheme, s_host) == (r_scheme, r_host) and s_parts[:len(r_parts)] == r_parts


# -- wire shapes ----------------------------------------------------------------------------------
def _latest_rows(conn, project: str, names: list[str]) -> dict[str, list]:
    """The newest live version per (model, stage), as MLflow's ``latest_versions``."""
    out: dict[str, list] = {}
    for chunk in _chunks(names):
        rank = sa.func.row_number().over(partition_by=(MV.c.name, MV.c.current_stage),
                                         order_by=MV.c.version.desc()).label("rank")
        ranked = sa.select(MV, rank).where(MV.c.project == project, MV.c.name.in_(chunk), MV.c.deleted == sa.false()).subquery()
        q = sa.select(*[ranked.c[c.name] for c in MV.columns]).where(ranked.c.rank == 1)
        for row in conn.execute(q.order_by(ranked.c.name, ranked.c.version)):
            out.setdefault(row.name, []).append(row)
    return out


def _tags_and_aliases(conn, project: str, names: list[str]):
    tags: dict[tuple, list] = {}
    aliases: dict[tuple, list] = {}
    for chunk in _chunks(sorted(set(names))):
        for t in conn.execute(sa.select(MVT).where(MVT.c.project == project, MVT.c.name.in_(chunk)).order_by(MVT.c.key)):
            tags.setdefault((t.name, t.version), []).append({"key": t.key, "value": t.value})
        for a in conn.execute(sa.select(RMA).where(RMA.c.project == project, RMA.c.name.in_(chunk)).order_by(RMA.c.alias)):
            aliases.setdefault((a.name, a.version), []).append(a.alias)
    return tags, aliases


def _version_dicts(conn, project: str, rows) -> list[dict]:
    tags, aliases = _tags_and_aliases(conn, project, [r.name for r in rows])
    out = []
    for r in rows:
        d = {
            "name": r.name,
            "version": str(r.version),
            "creation_timestamp": r.creation_time,
            "last_updated_timestamp": r.last_updated_time,
            "current_stage": r.current_stage,
        }
        for field, value in (("description", r.description), ("user_id", r.user_id), ("source", r.source),
                             ("run_id", r.run_id), ("run_link", r.run_link)):
            if value is not None:
                d[field] = value
        d["status"] = r.status
        if r.status_message:
            d["status_message"] = r.status_message
        if (r.name, r.version) in tags:
            d["tags"] = tags[(r.name, r.version)]
        if (r.name, r.version) in aliases:
            d["aliases"] = aliases[(r.name, r.version)]
        if r.model_id:
            d["model_id"] = r.model_id
        out.append(d)
    return out


def _model_dicts(conn, project: str, rows) -> list[dict]:
    names = [r.name for r in rows]
    tags: dict[str, list] = {}
    aliases: dict[str, list] = {}
    for chunk in _chunks(names):
        for t in conn.execute(sa.select(RMT).where(RMT.c.project == project, RMT.c.name.in_(chunk)).order_by(RMT.c.key)):
            tags.setdefault(t.name, []).append({"key": t.key, "value": t.value})
        for a in conn.execute(sa.select(RMA).where(RMA.c.project == project, RMA.c.name.in_(chunk)).order_by(RMA.c.alias)):
            aliases.setdefault(a.name, []).append({"alias": a.alias, "version": str(a.version)})
    latest = _latest_rows(conn, project, names)
    latest_dicts = _version_dicts(conn, project, [v for n in names for v in latest.get(n, [])])
    by_name: dict[str, list] = {}
    for d in latest_dicts:
        by_name.setdefault(d["name"], []).append(d)
    out = []
    for r in rows:
        d = {"name": r.name, "creation_timestamp": r.creation_time, "last_updated_timestamp": r.last_updated_time}
        if r.description is not None:
            d["description"] = r.description
        for field, value in (("latest_versions", by_name.get(r.name)), ("tags", tags.get(r.name)),
                             ("aliases", aliases.get(r.name))):
            if value:
                d[field] = value
        out.append(d)
    return out
