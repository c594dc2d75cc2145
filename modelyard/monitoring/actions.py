"""Actions an alert rule takes when an incident starts firing.

``rollback``: move a deployment's alias back to the version it served before. The alias and model
come from the action (``alias``, ``model_name``) or from the deployment record; the version to go
back to is ``to_version`` if given, else the newest other version the deployment's prediction log
shows it served, else the highest live version below the current one. A protected alias (the
project's ``protected_aliases``) is moved only when a maintainer created the rule with
``allow_protected`` (checked when the rule is saved); otherwise the action is refused and recorded.
``modelyard serve`` follows alias moves by itself.

``webhook``: queue a delivery of the alert's payload to ``url`` (an external CI that retrains, a
ticketing system), retried like any notification.

``pipeline``: queue a run of a modelyard pipeline (``{"type": "pipeline", "pipeline": NAME}``) with
the alert as its trigger; a ``modelyard pipeline worker`` runs it (see ``modelyard/store/pipelines.py``).

Every action is recorded (``alert_actions``) and written to the audit log.
"""
from __future__ import annotations

import logging

from modelyard.errors import MlflowError
from modelyard.monitoring.channels import validate_config

__all__ = ["ACTION_TYPES", "validate_action", "run_action"]

log = logging.getLogger("modelyard.monitoring")

ACTION_TYPES = ("rollback", "webhook", "pipeline")
AUDIT_ACTOR = "modelyard-monitor"


def validate_action(action: dict) -> dict:
    """The action as stored, or ValueError."""
    if not isinstance(action, dict) or action.get("type") not in ACTION_TYPES:
        raise ValueError(f"an action is an object whose type is one of: {', '.join(ACTION_TYPES)}")
    if action["type"] == "webhook":
        return {"type": "webhook", **validate_config("webhook", {k: v for k, v in action.items() if k != "type"})}
    if action["type"] == "pipeline":
        from modelyard.store.pipelines import validate_trigger_action

        return validate_trigger_action(action)
    out = {"type": "rollback"}
    for key in ("alias", "model_name", "deployment"):
        if action.get(key) is not None:
            if not isinstance(action[key], str) or not action[key]:
                raise ValueError(f"rollback {key} is a non-empty string")
            out[key] = action[key]
    if action.get("to_version") is not None:
        v = str(action["to_version"])
        if not v.isdigit() or int(v) < 1:
            raise ValueError("rollback to_version is a positive version number")
        out["to_version"] = v
    if action.get("allow_protected") is not None:
        out["allow_protected"] = bool(action["allow_protected"])
    return out


async def protected_aliases(services, project: str) -> list[str]:
    try:
        return list((await services.stores.projects.get(project)).get("protected_aliases") or [])
    except MlflowError:
        return []


async def run_action(services, item: dict) -> tuple[str, dict]:
    """Run one claimed action; returns (status, result) with status done, failed or refused."""
    action, alert, project = item["action"], item["alert"], item["project"]
    if action["type"] == "pipeline":
        from modelyard.store.pipelines import trigger_from_alert

        return await trigger_from_alert(services.stores.pipelines, project, action, alert, item.get("rule_id"))
    if action["type"] == "webhook":
        from modelyard.store.notifications import enqueue_sync

        target = {"type": "webhook", "config": {k: v for k, v in action.items() if k != "type"}}
        delivery = await services.db.write(
            lambda conn: enqueue_sync(conn, project, None, target, "action", alert, item["rule_id"], item["group_key"]))
        return "done", {"delivery_id": delivery, "url": action["url"]}
    return await _rollback(services, project, action, alert)


async def _rollback(services, project: str, action: dict, alert: dict) -> tuple[str, dict]:
    stores = services.stores
    labels = alert.get("commonLabels") or {}
    deployment = action.get("deployment") or labels.get("deployment")
    model_name, alias = action.get("model_name"), action.get("alias")
    if deployment and (model_name is None or alias is None) and getattr(stores, "deployments", None) is not None:
        try:
            spec = await stores.deployments.get(project, deployment)
            model_name = model_name or spec.get("model_name")
            alias = alias or spec.get("alias")
        except MlflowError:
            pass
    if model_name is None and deployment:  # the model the deployment's prediction log names
        served = await stores.predictions.versions_served(project, deployment, limit_days=2)
        model_name = served[0][0] if served else None
    if not model_name or not alias:
        return "failed", {"error": f"cannot tell which model and alias deployment {deployment!r} serves; "
                                   "give model_name and alias in the action"}
    if alias in await protected_aliases(services, project) and not action.get("allow_protected"):
        return "refused", {"error": f"alias '{alias}' is protected in project '{project}'; a maintainer must "
                                    "create the rule with allow_protected", "model_name": model_name, "alias": alias}
    try:
        current = int((await stores.registry.get_version_by_alias(project, model_name, alias))["version"])
    except MlflowError as exc:
        return "failed", {"error": exc.message, "model_name": model_name, "alias": alias}
    target = action.get("to_version")
    if target is None and deployment:
        for mn, mv, _ in await stores.predictions.versions_served(project, deployment):
            if mn in (model_name, None) and mv and mv.isdigit() and int(mv) != current:
                target = mv
                break
    if target is None:
        versions, _ = await stores.registry.search_versions(project, f"name = '{model_name}'", 1000, [], None)
        older = sorted((int(v["version"]) for v in versions if int(v["version"]) < current), reverse=True)
        target = str(older[0]) if older else None
    if target is None or int(target) == current:
        return "failed", {"error": f"no earlier version of {model_name} to roll {alias} back to",
                          "model_name": model_name, "alias": alias, "from_version": str(current)}
    try:
        await stores.registry.get_version(project, model_name, int(target))
        await stores.registry.set_alias(project, model_name, alias, int(target))
    except MlflowError as exc:
        return "failed", {"error": exc.message, "model_name": model_name, "alias": alias}
    services.audit.record(project, AUDIT_ACTOR, "alert action rollback", 200, "registered_model",
                          f"{model_name}@{alias}", details=f"{current} -> {target} ({alert.get('groupKey')})")
    log.warning("rolled %s@%s back from version %s to %s", model_name, alias, current, target)
    return "done", {"model_name": model_name, "alias": alias, "from_version": str(current), "to_version": str(target)}
