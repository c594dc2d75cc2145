"""Deployments: which model versions a model server runs, with what weights, and how it is doing.

A deployment is keyed by its project and name. Its *spec* (model, the versions or aliases it serves with their
weights, the shadow) is written by whoever deploys: ``modelyard serve`` when it starts, a pipeline's
deploy step, an operator with curl. Every change of the spec bumps ``generation``, which is how a
running ``modelyard serve`` notices that it should switch (it polls the record). The *state* (status,
endpoint, the version each replica answers with, the last heartbeat) is written by the replicas'
heartbeats and never bumps the generation.
"""
from __future__ import annotations

import orjson
import sqlalchemy as sa

from modelyard.errors import MlflowError
from modelyard.store import search
from modelyard.store._common import now_ms
from modelyard.store.db import Database
from modelyard.store.schema import deployment_replicas as R
from modelyard.store.schema import deployments as D
from modelyard.store.schema import model_versions as MV
from modelyard.store.schema import registered_model_aliases as RMA
from modelyard.store.schema import registered_models as RM

__all__ = ["DeploymentStore", "STATUSES"]

STATUSES = ("pending", "starting", "serving", "degraded", "stopped", "failed")
_SPEC_FIELDS = ("model_name", "versions", "shadow_version", "shadow_alias")


class DeploymentStore:
    def __init__(self, db: Database):
        self.db = db

    # -- writes ---------------------------------------------------------------------------------
    async def put(self, project: str, spec: dict) -> tuple[dict, bool]:
        """Create or update a deployment from a validated spec; returns (deployment, created).

        ``spec`` has name, model_name, versions (``[{"version"|"alias", "weight"}]``), and optional
        shadow_version, shadow_alias, endpoint_url, status. The model, every version and every alias
        must exist in the registry, checked in the same transaction as the write.
        """
        name = spec["name"]
        versions_json = orjson.dumps(spec["versions"]).decode()

        def put(conn):
            _check_registry(conn, project, spec)
            row = conn.execute(sa.select(D).where(D.c.project == project, D.c.name == name)).first()
            t = now_ms()
            if row is None:
                conn.execute(D.insert().values(
                    project=project, name=name, model_name=spec["model_name"], versions=versions_json,
                    shadow_version=spec.get("shadow_version"), shadow_alias=spec.get("shadow_alias"),
                    endpoint_url=spec.get("endpoint_url"), status=spec.get("status") or "pending",
                    generation=1, creation_time=t, last_updated_time=t))
                created = True
            else:
                old = {"model_name": row.model_name, "versions": row.versions,
                       "shadow_version": row.shadow_version, "shadow_alias": row.shadow_alias}
                new = {"model_name": spec["model_name"], "versions": versions_json,
                       "shadow_version": spec.get("shadow_version"), "shadow_alias": spec.get("shadow_alias")}
                changed = any(old[k] != new[k] for k in _SPEC_FIELDS)
                values = dict(new, last_updated_time=t)
                if changed:
                    # Replicas compare generations to learn that the spec moved; state updates do not count.
                    values["generation"] = row.generation + 1
                if spec.get("endpoint_url") is not None:
                    values["endpoint_url"] = spec["endpoint_url"]
                if spec.get("status") is not None:
                    values["status"] = spec["status"]
                conn.execute(D.update().where(D.c.project == project, D.c.name == name).values(**values))
                created = False
            return self._get(conn, project, name), created

        return await self.db.write(put)

    async def heartbeat(self, project: str, beat: dict) -> dict:
        """Record a replica's heartbeat; the deployment takes the status and endpoint it reports."""
        name = beat["name"]

        def heartbeat(conn):
            row = conn.execute(sa.select(D.c.name).where(D.c.project == project, D.c.name == name)).first()
            if row is None:
                raise MlflowError.not_found(f"Deployment '{name}' does not exist.")
            t = now_ms()
            values = {
                "endpoint_url": beat.get("endpoint_url"), "status": beat["status"],
                "model_version": beat.get("model_version"), "message": beat.get("message"),
                "last_heartbeat_time": t,
            }
            mine = (R.c.project == project, R.c.deployment == name, R.c.replica_id == beat["replica_id"])
            if conn.execute(R.update().where(*mine).values(**values)).rowcount == 0:
                conn.execute(R.insert().values(project=project, deployment=name, replica_id=beat["replica_id"],
                                               started_time=t, **values))
            deployment_values = {"status": beat["status"], "message": beat.get("message"), "last_heartbeat_time": t}
            if beat.get("endpoint_url"):
                deployment_values["endpoint_url"] = beat["endpoint_url"]
            conn.execute(D.update().where(D.c.project == project, D.c.name == name).values(**deployment_values))
            return self._get(conn, project, name)

        return await self.db.write(heartbeat)

    async def delete(self, project: str, name: str) -> None:
        def delete(conn):
            if conn.execute(D.delete().where(D.c.project == project, D.c.name == name)).rowcount == 0:
                raise MlflowError.not_found(f"Deployment '{name}' does not exist.")
            conn.execute(R.delete().where(R.c.project == project, R.c.deployment == name))

        await self.db.write(delete)

    # -- reads ----------------------------------------------------------------------------------
    async def get(self, project: str, name: str) -> dict:
        return await self.db.read(self._get, project, name)

    async def list(self, project: str, model_name: str | None, max_results: int, page_token: str | None
                   ) -> tuple[list[dict], str | None]:
        offset = search.decode_page_token(page_token)

        def run(conn):
            q = sa.select(D).where(D.c.project == project)
            if model_name:
                q = q.where(D.c.model_name == model_name)
            rows = conn.execute(q.order_by(D.c.name).limit(max_results + 1).offset(offset)).all()
            token = search.encode_page_token(offset + max_results) if len(rows) > max_results else None
            return self._to_dicts(conn, project, rows[:max_results]), token

        return await self.db.read(run)

    def _get(self, conn, project: str, name: str) -> dict:
        row = conn.execute(sa.select(D).where(D.c.project == project, D.c.name == name)).first()
        if row is None:
            raise MlflowError.not_found(f"Deployment '{name}' does not exist.")
        return self._to_dicts(conn, project, [row])[0]

    @staticmethod
    def _to_dicts(conn, project: str, rows) -> list[dict]:
        names = [r.name for r in rows]
        replicas: dict[str, list] = {}
        if names:
            q = (sa.select(R).where(R.c.project == project, R.c.deployment.in_(names))
                 .order_by(R.c.deployment, R.c.replica_id))
            for r in conn.execute(q):
                replica = {"replica_id": r.replica_id, "status": r.status, "started_timestamp": r.started_time,
                           "last_heartbeat_timestamp": r.last_heartbeat_time}
                for key in ("endpoint_url", "model_version", "message"):
                    if getattr(r, key):
                        replica[key] = getattr(r, key)
                replicas.setdefault(r.deployment, []).append(replica)
        out = []
        for r in rows:
            d = {
                "name": r.name, "model_name": r.model_name, "versions": orjson.loads(r.versions),
                "status": r.status, "generation": r.generation, "creation_timestamp": r.creation_time,
                "last_updated_timestamp": r.last_updated_time,
            }
            for key in ("shadow_version", "shadow_alias", "endpoint_url", "message"):
                if getattr(r, key):
                    d[key] = getattr(r, key)
            # The alias the deployment follows (its first alias arm), for readers that want one name.
            alias = next((v["alias"] for v in d["versions"] if "alias" in v), None)
            if alias:
                d["alias"] = alias
            if r.last_heartbeat_time is not None:
                d["last_heartbeat_timestamp"] = r.last_heartbeat_time
            d["replicas"] = replicas.get(r.name, [])
            out.append(d)
        return out


def _check_registry(conn, project: str, spec: dict) -> None:
    """The model, its versions and aliases must exist: a deployment of nothing is a client mistake."""
    model = spec["model_name"]
    if conn.execute(sa.select(RM.c.name).where(RM.c.project == project, RM.c.name == model)).first() is None:
        raise MlflowError.not_found(f"Registered Model with name={model} not found")
    versions = {int(v["version"]) for v in spec["versions"] if "version" in v}
    if spec.get("shadow_version"):
        versions.add(int(spec["shadow_version"]))
    if versions:
        found = {r.version for r in conn.execute(sa.select(MV.c.version).where(
            MV.c.project == project, MV.c.name == model, MV.c.version.in_(versions), MV.c.deleted == sa.false()))}
        for missing in sorted(versions - found):
            raise MlflowError.not_found(f"Model Version (name={model}, version={missing}) not found")
    aliases = {v["alias"] for v in spec["versions"] if "alias" in v}
    if spec.get("shadow_alias"):
        aliases.add(spec["shadow_alias"])
    if aliases:
        found = {r.alias for r in conn.execute(sa.select(RMA.c.alias).where(
            RMA.c.project == project, RMA.c.name == model, RMA.c.alias.in_(aliases)))}
        for missing in sorted(aliases - found):
            raise MlflowError.invalid(f"Registered model alias {missing} not found.")
