"""Registry webhooks through the real mlflow client: CRUD, validation, and signed deliveries that a
receiver started by the test gets when a version is created or an alias moves."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from mlflow import MlflowClient
from mlflow.entities.webhook import WebhookEvent, WebhookStatus
from mlflow.exceptions import MlflowException

from conftest import ServerProcess, unique

WEBHOOK_ENV = {"MODELYARD_WEBHOOK_ALLOW_PRIVATE_IPS": "true", "MODELYARD_WEBHOOK_ALLOWED_SCHEMES": "http,https",
               "MODELYARD_WEBHOOK_TIMEOUT": "5"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hook_server(request, tmp_path_factory):
    """A server that may deliver to loopback (the receiver runs on this machine)."""
    args = []
    if request.param == "postgres":
        args = ["--database-url", request.getfixturevalue("pg_database")()]
    proc = ServerProcess(tmp_path_factory.mktemp(f"hooks-{request.param}") / "data", *args, env=WEBHOOK_ENV).start()
    yield proc
    proc.stop()


class Receiver:
    """An HTTP server that records every POST; ``status`` sets what it answers."""

    def __init__(self):
        self.requests: list[dict] = []
        self.status = 200
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                with outer.cond:
                    outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    outer.cond.notify_all()
                self.send_response(outer.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 20) -> list[dict]:
        deadline = time.time() + timeout
        with self.cond:
            while len(self.requests) < count and time.time() < deadline:
                self.cond.wait(0.2)
        return list(self.requests)


@pytest.fixture()
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


def verify(secret: str, request: dict) -> bool:
    """The check a receiver makes, as MLflow documents it."""
    h = {k.lower(): v for k, v in request["headers"].items()}
    signed = f"{h['x-mlflow-delivery-id']}.{h['x-mlflow-timestamp']}.{request['body']}"
    expected = base64.b64encode(hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()).decode()
    return h.get("x-mlflow-signature") == f"v1,{expected}"


def test_create_get_list_update_and_delete_a_webhook_with_the_mlflow_client(hook_server, receiver):
    client = MlflowClient(hook_server.url)
    name = unique("ci-trigger")
    hook = client.create_webhook(name=name, url=receiver.url, events=["model_version.created"],
                                 description="start CI", secret="s3cret")
    assert hook.name == name and hook.status == WebhookStatus.ACTIVE and hook.secret is None
    assert [str(e) for e in hook.events] == ["model_version.created"]
    assert client.get_webhook(hook.webhook_id).description == "start CI"
    assert hook.webhook_id in [w.webhook_id for w in client.list_webhooks()]

    updated = client.update_webhook(hook.webhook_id, events=["model_version.created", "model_version_alias.created"],
                                    status="DISABLED")
    assert updated.status == WebhookStatus.DISABLED
    assert {str(e) for e in client.get_webhook(hook.webhook_id).events} == {
        "model_version.created", "model_version_alias.created"}
    assert updated.last_updated_timestamp >= hook.last_updated_timestamp

    client.delete_webhook(hook.webhook_id)
    with pytest.raises(MlflowException, match="not found") as info:
        client.get_webhook(hook.webhook_id)
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert hook.webhook_id not in [w.webhook_id for w in client.list_webhooks()]


def test_bad_webhooks_are_refused_with_mlflows_messages_and_nothing_is_stored(hook_server, receiver):
    api = hook_server.url + "/api/2.0/mlflow/webhooks"
    before = requests.get(api).json().get("webhooks", [])
    cases = [
        ({"name": "bad name!", "url": receiver.url, "events": [{"entity": "MODEL_VERSION", "action": "CREATED"}]},
         "Webhook name"),
        ({"name": "ok", "url": "ftp://example.com/x", "events": [{"entity": "MODEL_VERSION", "action": "CREATED"}]},
         "Invalid webhook URL scheme"),
        ({"name": "ok", "url": receiver.url, "events": []}, "non-empty list"),
        ({"name": "ok", "url": receiver.url, "events": [{"entity": "MODEL_VERSION", "action": "DELETED"}]},
         "Invalid action 'deleted' for entity 'model_version'"),
    ]
    for body, message in cases:
        r = requests.post(api, json=body)
        assert r.status_code == 400, body
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE" and message in r.json()["message"]
    assert requests.get(api).json().get("webhooks", []) == before
    assert requests.get(api + "/not-a-webhook").status_code == 404


def test_a_new_model_version_and_alias_moves_are_delivered_signed_to_the_receiver(hook_server, receiver, tmp_path):
    client = MlflowClient(hook_server.url)
    secret = "topsecret"
    hook = client.create_webhook(name=unique("ci"), url=receiver.url, secret=secret,
                                 events=[WebhookEvent("model_version", "created"),
                                         WebhookEvent("model_version_alias", "created"),
                                         WebhookEvent("model_version_alias", "deleted")])
    model = unique("hooked")
    client.create_registered_model(model)  # registered_model.created: not subscribed, not delivered
    run = client.create_run("0")
    client.log_text(run.info.run_id, "weights", "model/MLmodel")
    version = client.create_model_version(model, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id,
                                          tags={"stage": "candidate"})
    client.set_registered_model_alias(model, "champion", version.version)
    client.delete_registered_model_alias(model, "champion")
    got = receiver.wait_for(3)
    assert len(got) == 3
    bodies = [json.loads(r["body"]) for r in got]
    by_event = {(b["entity"], b["action"]): b for b in bodies}
    assert set(by_event) == {("model_version", "created"), ("model_version_alias", "created"),
                             ("model_version_alias", "deleted")}
    created = by_event[("model_version", "created")]["data"]
    assert created == {"name": model, "version": version.version, "source": f"runs:/{run.info.run_id}/model",
                       "run_id": run.info.run_id, "tags": {"stage": "candidate"}, "description": None}
    assert by_event[("model_version_alias", "created")]["data"] == {"name": model, "alias": "champion",
                                                                     "version": version.version}
    for r in got:
        assert verify(secret, r), r["headers"]
        assert not verify("wrong", r)
        assert abs(int(r["headers"]["X-MLflow-Timestamp"]) - time.time()) < 120
    assert len({r["headers"]["X-MLflow-Delivery-Id"] for r in got}) == 3
    # The receiver may answer before the server has recorded the outcome: wait for the records.
    deadline = time.time() + 10
    while True:
        deliveries = requests.get(hook_server.url + "/api/modelyard/v1/webhooks/deliveries",
                                  params={"webhook_id": hook.webhook_id}).json()["deliveries"]
        if time.time() > deadline or all(d["status"] == "DELIVERED" for d in deliveries):
            break
        time.sleep(0.1)
    assert sorted(d["event"] for d in deliveries) == sorted(["model_version.created", "model_version_alias.created",
                                                             "model_version_alias.deleted"])
    assert all(d["status"] == "DELIVERED" and d["response_status"] == 200 for d in deliveries), deliveries


def test_a_disabled_webhook_gets_nothing_and_a_failing_receiver_is_retried_then_recorded(hook_server, receiver):
    client = MlflowClient(hook_server.url)
    model = unique("quiet")
    client.create_registered_model(model)
    disabled = client.create_webhook(name=unique("off"), url=receiver.url, events=["model_version_alias.created"],
                                     status="DISABLED")
    receiver.status = 503
    failing = client.create_webhook(name=unique("flaky"), url=receiver.url + "?who=flaky",
                                    events=["registered_model.created"])
    other = unique("retried")
    client.create_registered_model(other)
    got = receiver.wait_for(2, timeout=15)
    assert len(got) >= 2 and all(r["path"] == "/hook?who=flaky" for r in got)  # retried after the 503
    receiver.status = 200
    deadline = time.time() + 20
    while time.time() < deadline:
        deliveries = requests.get(hook_server.url + "/api/modelyard/v1/webhooks/deliveries",
                                  params={"webhook_id": failing.webhook_id}).json()["deliveries"]
        if deliveries and deliveries[0]["status"] != "PENDING":
            break
        time.sleep(0.3)
    assert deliveries[0]["status"] in ("DELIVERED", "FAILED") and deliveries[0]["attempts"] >= 2
    assert json.loads(json.dumps(deliveries[0]["payload"]))["data"]["name"] == other
    nothing = requests.get(hook_server.url + "/api/modelyard/v1/webhooks/deliveries",
                           params={"webhook_id": disabled.webhook_id}).json()["deliveries"]
    assert nothing == []


def test_test_webhook_sends_an_example_payload_and_reports_the_answer(hook_server, receiver):
    client = MlflowClient(hook_server.url)
    hook = client.create_webhook(name=unique("probe"), url=receiver.url, events=["model_version_alias.created"],
                                 secret="k")
    result = client.test_webhook(hook.webhook_id)
    assert result.success and result.response_status == 200 and result.response_body == "ok"
    sent = receiver.wait_for(1)[0]
    body = json.loads(sent["body"])
    assert (body["entity"], body["action"]) == ("model_version_alias", "created")
    assert set(body["data"]) == {"name", "alias", "version"} and verify("k", sent)
    receiver.server.shutdown()
    receiver.server.server_close()
    down = client.test_webhook(hook.webhook_id, event=WebhookEvent("model_version_alias", "created"))
    assert not down.success and down.error_message


def test_private_addresses_are_refused_unless_the_server_allows_them(fresh_server):
    server = fresh_server(env={"MODELYARD_WEBHOOK_ALLOWED_SCHEMES": "http,https"})
    r = requests.post(server.url + "/api/2.0/mlflow/webhooks", json={
        "name": "internal", "url": "http://127.0.0.1:9/x", "events": [{"entity": "MODEL_VERSION", "action": "CREATED"}]})
    assert r.status_code == 400 and "non-public" in r.json()["message"]
    r = requests.post(server.url + "/api/2.0/mlflow/webhooks", json={
        "name": "plain", "url": "http://example.com/x", "events": [{"entity": "MODEL_VERSION", "action": "CREATED"}]})
    # example.com may not resolve offline; either way nothing internal is reachable.
    assert r.status_code in (200, 400)
