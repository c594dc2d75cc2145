"""The stores: one per resource, all over one :class:`~modelyard.store.db.Database`."""
from __future__ import annotations

from modelyard.store.db import Database
from modelyard.store.deployments import DeploymentStore
from modelyard.store.experiments import ExperimentStore
from modelyard.store.logged_models import LoggedModelStore
from modelyard.store.metrics import MetricStore
from modelyard.store.pipelines import PipelineStore
from modelyard.store.webhooks import WebhookStore
from modelyard.store.projects import ProjectStore
from modelyard.store.registry import RegistryStore
from modelyard.store.runs import RunStore
from modelyard.store.tokens import TokenStore
from modelyard.store.alerts import AlertStore
from modelyard.store.monitors import MonitorStore
from modelyard.store.notifications import NotificationStore
from modelyard.store.predictions import PredictionStore

__all__ = ["Stores", "run_offline"]


class Stores:
    def __init__(self, db: Database, artifact_root: str):
        self.db = db
        self.experiments = ExperimentStore(db, artifact_root)
        self.runs = RunStore(db)
        self.metrics = MetricStore(db)
        self.logged_models = LoggedModelStore(db)
        self.registry = RegistryStore(db)
        self.projects = ProjectStore(db, self.experiments)
        self.tokens = TokenStore(db)
        self.predictions = PredictionStore(db)
        self.monitors = MonitorStore(db)
        self.alerts = AlertStore(db)
        self.notifications = NotificationStore(db)
        self.deployments = DeploymentStore(db)
        self.pipelines = PipelineStore(db)
        self.webhooks = WebhookStore(db)


def run_offline(database_url: str, action):
    """Run ``await action(stores)`` on a database, migrated first, outside a server: what
    ``modelyard admin`` does (users, projects, tokens) before or beside a running server."""
    import asyncio

    from modelyard.store.migrate import upgrade

    db = Database(database_url)
    upgrade(db.write_engine)
    stores = Stores(db, artifact_root="mlflow-artifacts:")
    stores.projects.ensure_default()
    stores.experiments.ensure_default()

    async def run():
        db.start()
        return await action(stores)

    try:
        return asyncio.run(run())
    finally:
        db.close()
