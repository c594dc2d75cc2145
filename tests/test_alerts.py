"""Alert rules, alert states, notification channels (webhook, Slack, SMTP), retries, silences,
grouping, repeats and actions (alias rollback, webhook), against real server processes."""
from __future__ import annotations

import time

import pytest
import requests

from test_monitoring_support import Api, ApiError, Receiver, monitoring_server, name, predictions, rows


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def aserver(request, tmp_path_factory):
    args = []
    if request.param == "postgres":
        args = ["--database-url", request.getfixturevalue("pg_database")()]
    proc = monitoring_server(tmp_path_factory.mktemp("alerts"), *args)
    proc.backend = request.param
    yield proc
    proc.stop()


@pytest.fixture()
def api(aserver):
    return Api(aserver.url)


@pytest.fixture()
def receiver():
    r = Receiver()
    yield r
    r.close()


class Setup:
    """A deployment with a reference and a drift monitor over a 60 s window."""

    def __init__(self, api: Api, receiver: Receiver | None = None, channel_type: str = "webhook"):
        self.api = api
        self.dep = name("dep")
        ref = api.post("/references/create", {"name": name("ref"), "records": rows(2000, seed=1)})["reference"]
        self.mon = name("mon")
        # evaluated on demand only: a scheduled window would interleave with the test's own
        api.post("/monitors/create", {"name": self.mon, "deployment": self.dep, "enabled": False,
                                      "config": {"window_seconds": 60, "kinds": ["data_drift", "health"],
                                                 "reference": {"reference_id": ref["reference_id"]}}})
        self.channel = name("ch")
        if receiver is not None:
            api.post("/notification-channels/create", {"name": self.channel, "type": channel_type,
                                                       "config": {"url": receiver.url + "/hook"}})

    def rule(self, **spec) -> dict:
        body = {"name": name("rule"), "expr": f'drift_detected{{monitor="{self.mon}"}} > 0', **spec}
        return self.api.post("/alert-rules/create", body)["rule"]

    def traffic(self, shift: float, ts_ms: int, n: int = 1500, **kw) -> None:
        self.api.post("/predictions/log", {"predictions": predictions(self.dep, rows(n, shift=shift, seed=ts_ms % 997,
                                                                                      **kw), ts_ms=ts_ms)})

    def evaluate(self, at_ms: int) -> dict:
        return self.api.post("/monitors/evaluate", {"name": self.mon, "at_ms": at_ms, "include_report": False})


def alerts(api: Api, rule: str, state: str | None = None) -> list[dict]:
    params = {"rule": rule}
    if state:
        params["state"] = state
    return api.get("/alerts/list", **params)["alerts"]


@pytest.mark.parametrize("body,fragment", [
    ({"expr": "drift_detected >"}, "Cannot parse"),
    ({"expr": 'drift_detected{monitor=unquoted} > 0'}, "matchers"),
    ({"expr": 'x{a=~"("} > 1'}, "regular expression"),
    ({"expr": "x > 1", "severity": "apocalyptic"}, "severity"),
    ({"expr": "x > 1", "for_seconds": -1}, "for_seconds"),
    ({"expr": "x > 1", "channels": ["no-such-channel"]}, "no-such-channel"),
    ({"expr": "x > 1", "actions": [{"type": "reboot"}]}, "actions[0]"),
    ({"expr": "x > 1", "actions": [{"type": "webhook", "url": "ftp://x"}]}, "url"),
    ({"expr": "x > 1", "actions": [{"type": "rollback", "alias": "production"}]}, "protected"),
    ({"expr": "x > 1", "labels": {"team": 5}}, "labels"),
])
def test_a_bad_rule_is_a_400_that_says_why_and_is_not_stored(api, body, fragment):
    rule = name("bad")
    r = api.raw("POST", "/alert-rules/create", json={"name": rule, **body})
    assert r.status_code in (400, 404) and fragment in r.json()["message"], r.text
    assert api.raw("GET", "/alert-rules/get", params={"name": rule}).status_code == 404


def test_rules_are_listed_updated_and_deleted(api):
    s = Setup(api)
    rule = s.rule(for_seconds=60, labels={"team": "risk"})
    assert rule["for_seconds"] == 60 and rule["group_by"] == ["alertname", "deployment"]
    updated = api.post("/alert-rules/update", {"name": rule["name"], "severity": "critical"})["rule"]
    assert updated["severity"] == "critical" and updated["for_seconds"] == 60 and updated["labels"] == {"team": "risk"}
    assert rule["name"] in [r["name"] for r in api.get("/alert-rules/list")["rules"]]
    api.delete("/alert-rules/delete", {"name": rule["name"]})
    assert api.raw("GET", "/alert-rules/get", params={"name": rule["name"]}).status_code == 404


def test_an_alert_goes_pending_then_firing_pages_once_and_resolves_when_the_shift_is_removed(api, receiver):
    s = Setup(api, receiver)
    rule = s.rule(for_seconds=1.5, channels=[s.channel], annotations={"summary": "{{ $labels.feature }} drifted"})
    t0 = int(time.time() * 1000) - 120_000
    s.traffic(shift=1.5, ts_ms=t0)
    s.evaluate(t0 + 1000)
    pending = alerts(api, rule["name"])
    assert [(a["state"], a["labels"]["feature"]) for a in pending] == [("pending", "x")]
    s.evaluate(t0 + 2000)
    assert alerts(api, rule["name"])[0]["state"] == "pending"
    time.sleep(1.6)
    s.evaluate(t0 + 3000)
    firing = alerts(api, rule["name"], "firing")
    assert len(firing) == 1 and firing[0]["fired_at_ms"] >= firing[0]["active_at_ms"] + 1500
    for at in (t0 + 4000, t0 + 5000, t0 + 6000):  # still drifting: no new page
        s.evaluate(at)
    bodies = receiver.wait_for(1)
    time.sleep(1.0)
    assert len(receiver.bodies) == 1
    page = bodies[0]["json"]
    assert page["status"] == "firing" and page["groupLabels"] == {"alertname": rule["name"], "deployment": s.dep}
    assert [a["labels"]["feature"] for a in page["alerts"]] == ["x"]
    assert page["alerts"][0]["annotations"]["summary"] == "x drifted"
    # the shift is gone: new traffic like the reference, evaluated over a window that holds only it
    s.traffic(shift=0.0, ts_ms=t0 + 100_000)
    s.evaluate(t0 + 101_000)
    assert alerts(api, rule["name"], "firing") == []
    resolved = alerts(api, rule["name"], "resolved")
    assert len(resolved) == 1 and resolved[0]["resolved_at_ms"] >= resolved[0]["fired_at_ms"]
    bodies = receiver.wait_for(2)
    assert bodies[1]["json"]["status"] == "resolved" and bodies[1]["json"]["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    kinds = [e["kind"] for e in api.get("/alerts/history", rule=rule["name"], max_results=100)["events"]]
    for kind in ("pending", "firing", "group_firing", "notification_sent", "resolved", "group_resolved"):
        assert kind in kinds, kinds
    deliveries = api.get("/notifications/deliveries", channel=s.channel)["deliveries"]
    assert sorted(d["kind"] for d in deliveries) == ["firing", "resolved"] and {d["status"] for d in deliveries} == {"sent"}
    audit = api.get("/project/audit-events", actor="modelyard-monitor", max_results=1000)["events"]
    mine = {(e["action"], e.get("object_id")) for e in audit}
    for action in ("alert pending", "alert firing", "alert resolved"):
        assert (action, rule["name"]) in mine
    assert ("notification firing", s.channel) in mine and ("notification resolved", s.channel) in mine


def test_a_pending_alert_whose_condition_goes_away_never_fires_nor_pages(api, receiver):
    s = Setup(api, receiver)
    rule = s.rule(for_seconds=30, channels=[s.channel])
    t0 = int(time.time() * 1000) - 120_000
    s.traffic(shift=2.0, ts_ms=t0)
    s.evaluate(t0 + 1000)
    assert alerts(api, rule["name"])[0]["state"] == "pending"
    s.traffic(shift=0.0, ts_ms=t0 + 100_000)
    s.evaluate(t0 + 101_000)
    assert alerts(api, rule["name"]) == []
    time.sleep(1.0)
    assert receiver.bodies == []


def test_alerts_of_one_group_page_together_once(api, receiver):
    s = Setup(api, receiver)
    rule = s.rule(channels=[s.channel])
    t0 = int(time.time() * 1000) - 120_000
    s.traffic(shift=1.5, ts_ms=t0, cats="abcdxyz")  # x and c both drift
    s.evaluate(t0 + 1000)
    s.evaluate(t0 + 2000)
    page = receiver.wait_for(1)[0]["json"]
    time.sleep(1.0)
    assert len(receiver.bodies) == 1
    assert sorted(a["labels"]["feature"] for a in page["alerts"]) == ["c", "x"]
    assert len(alerts(api, rule["name"], "firing")) == 2


def test_alerts_joining_a_firing_group_page_again_only_after_the_group_interval(api, receiver):
    s = Setup(api, receiver)
    s.rule(channels=[s.channel], group_interval_seconds=1)
    t0 = int(time.time() * 1000) - 120_000
    s.traffic(shift=1.5, ts_ms=t0)  # x drifts
    s.evaluate(t0 + 1000)
    assert [a["labels"]["feature"] for a in receiver.wait_for(1)[0]["json"]["alerts"]] == ["x"]
    s.traffic(shift=1.5, ts_ms=t0 + 70_000, cats="abcxyz")  # now c drifts too
    s.evaluate(t0 + 71_000)
    time.sleep(0.5)
    assert len(receiver.bodies) == 1  # within the group interval: no page for the newcomer yet
    time.sleep(1.0)
    s.evaluate(t0 + 72_000)
    second = receiver.wait_for(2)[1]["json"]
    assert second["status"] == "firing" and sorted(a["labels"]["feature"] for a in second["alerts"]) == ["c", "x"]


def test_keep_firing_for_holds_an_alert_through_a_short_gap(api, receiver):
    s = Setup(api, receiver)
    rule = s.rule(channels=[s.channel], keep_firing_for_seconds=60)
    t0 = int(time.time() * 1000) - 120_000
    s.traffic(shift=1.5, ts_ms=t0)
    s.evaluate(t0 + 1000)
    s.traffic(shift=0.0, ts_ms=t0 + 100_000)
    s.evaluate(t0 + 101_000)  # the condition cleared, but not for 60 s yet
    assert [a["state"] for a in alerts(api, rule["name"])] == ["firing"]
    time.sleep(0.5)
    assert [b["json"]["status"] for b in receiver.bodies] == ["firing"]


def test_a_firing_group_pages_again_after_its_repeat_interval(api, receiver):
    s = Setup(api, receiver)
    s.rule(channels=[s.channel], repeat_interval_seconds=1)
    t0 = int(time.time() * 1000) - 120_000
    s.traffic(shift=1.5, ts_ms=t0)
    s.evaluate(t0 + 1000)
    s.evaluate(t0 + 2000)  # within the repeat interval: nothing new
    receiver.wait_for(1)
    time.sleep(1.2)
    s.evaluate(t0 + 3000)
    assert [b["json"]["status"] for b in receiver.wait_for(2)] == ["firing", "firing"]


def test_a_silence_keeps_a_firing_alert_from_paging_until_it_expires(api, receiver):
    s = Setup(api, receiver)
    rule = s.rule(channels=[s.channel])
    silence = api.post("/silences/create", {"matchers": [{"name": "deployment", "value": s.dep}],
                                            "duration_seconds": 600, "comment": "maintenance"})["silence"]
    assert silence["state"] == "active"
    t0 = int(time.time() * 1000) - 120_000
    s.traffic(shift=1.5, ts_ms=t0)
    s.evaluate(t0 + 1000)
    assert len(alerts(api, rule["name"], "firing")) == 1
    time.sleep(1.0)
    assert receiver.bodies == []
    api.post("/silences/expire", {"silence_id": silence["silence_id"]})
    assert [x for x in api.get("/silences/list")["silences"] if x["silence_id"] == silence["silence_id"]][0]["state"] \
        == "expired"
    s.evaluate(t0 + 2000)
    assert receiver.wait_for(1)[0]["json"]["status"] == "firing"


def test_a_failing_receiver_is_retried_with_backoff_and_every_attempt_is_recorded(api):
    flaky = Receiver(fail_first=2)
    try:
        s = Setup(api, flaky)
        s.rule(channels=[s.channel])
        t0 = int(time.time() * 1000) - 120_000
        s.traffic(shift=1.5, ts_ms=t0)
        s.evaluate(t0 + 1000)
        flaky.wait_for(1, timeout=20)
        assert flaky.attempts == 3
        deadline = time.time() + 10
        while time.time() < deadline:
            d = api.get("/notifications/deliveries", channel=s.channel)["deliveries"][0]
            if d["status"] == "sent":
                break
            time.sleep(0.2)
        assert d["status"] == "sent" and d["attempts"] == 3 and "last_error" not in d
    finally:
        flaky.close()


def test_slack_channels_get_a_text_message(api, receiver):
    s = Setup(api, receiver, channel_type="slack")
    rule = s.rule(channels=[s.channel], severity="critical")
    t0 = int(time.time() * 1000) - 120_000
    s.traffic(shift=1.5, ts_ms=t0)
    s.evaluate(t0 + 1000)
    text = receiver.wait_for(1)[0]["json"]["text"]
    assert text.startswith(f"[FIRING] {rule['name']} (1 alert)") and "feature=x" in text


def test_email_channels_send_over_smtp(api):
    from aiosmtpd.controller import Controller

    got = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
            got.append((envelope.mail_from, envelope.rcpt_tos, envelope.content.decode()))
            return "250 OK"

    from conftest import free_port

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        s = Setup(api)
        api.post("/notification-channels/create", {"name": s.channel, "type": "email", "config": {
            "host": "127.0.0.1", "port": port,
            "from": "modelyard@example.com", "to": ["oncall@example.com"]}})
        rule = s.rule(channels=[s.channel])
        t0 = int(time.time() * 1000) - 120_000
        s.traffic(shift=1.5, ts_ms=t0)
        s.evaluate(t0 + 1000)
        deadline = time.time() + 15
        while not got and time.time() < deadline:
            time.sleep(0.1)
        sender, rcpts, content = got[0]
        assert sender == "modelyard@example.com" and rcpts == ["oncall@example.com"]
        import email

        message = email.message_from_string(content)
        assert message["Subject"].startswith(f"[FIRING] {rule['name']} (1 alert)")
        assert "feature=x" in message.get_payload(decode=True).decode()
    finally:
        controller.stop()


def test_channel_secrets_are_masked_in_listings_and_channels_can_be_tested(api, receiver):
    ch = name("ch")
    api.post("/notification-channels/create", {"name": ch, "type": "webhook", "config": {
        "url": receiver.url + "/t", "headers": {"Authorization": "Bearer s3cret"}}})
    listed = [c for c in api.get("/notification-channels/list")["channels"] if c["name"] == ch][0]
    assert listed["config"]["headers"]["Authorization"] == "***"
    api.post("/notification-channels/test", {"name": ch})
    assert receiver.wait_for(1)[0]["json"]["rule"] == "test"
    bad = api.raw("POST", "/notification-channels/create", json={"name": name("x"), "type": "email", "config": {}})
    assert bad.status_code == 400 and "email" in bad.json()["message"]
    api.delete("/notification-channels/delete", {"name": ch})
    assert ch not in [c["name"] for c in api.get("/notification-channels/list")["channels"]]


def test_a_rollback_action_moves_the_alias_back_to_the_version_served_before(aserver, api, receiver):
    from mlflow import MlflowClient

    client = MlflowClient(aserver.url)
    model = name("model")
    client.create_registered_model(model)
    for _ in range(3):
        client.create_model_version(model, "s3://bucket/model")
    client.set_registered_model_alias(model, "prod", "3")
    s = Setup(api, receiver)
    rule = s.rule(channels=[s.channel], actions=[{"type": "rollback", "alias": "prod", "model_name": model},
                                                  {"type": "webhook", "url": receiver.url + "/retrain"}])
    t0 = int(time.time() * 1000) - 120_000
    # version 2 served before version 3 took over and the inputs shifted
    api.post("/predictions/log", {"predictions": predictions(s.dep, rows(200), ts_ms=t0 - 1000, version="2",
                                                             model_name=model)})
    api.post("/predictions/log", {"predictions": predictions(s.dep, rows(300, shift=1.5), ts_ms=t0, version="3",
                                                             model_name=model)})
    s.evaluate(t0 + 1000)
    deadline = time.time() + 15
    while time.time() < deadline and client.get_model_version_by_alias(model, "prod").version != "2":
        time.sleep(0.2)
    assert client.get_model_version_by_alias(model, "prod").version == "2"
    actions = [a for a in api.get("/alerts/actions")["actions"] if a["rule_id"] == rule["rule_id"]]
    done = {a["type"]: a for a in actions}
    assert done["rollback"]["status"] == "done"
    assert done["rollback"]["result"] == {"model_name": model, "alias": "prod", "from_version": "3", "to_version": "2"}
    paths = sorted(b["path"] for b in receiver.wait_for(2))
    assert paths == ["/hook", "/retrain"]
    s.evaluate(t0 + 2000)  # still firing: the actions ran once for the incident
    time.sleep(0.5)
    assert len([a for a in api.get("/alerts/actions")["actions"] if a["rule_id"] == rule["rule_id"]]) == 2


def test_a_protected_alias_is_rolled_back_only_when_a_maintainer_allowed_it(aserver, api):
    from mlflow import MlflowClient

    client = MlflowClient(aserver.url)
    model = name("model")
    client.create_registered_model(model)
    for _ in range(2):
        client.create_model_version(model, "s3://bucket/model")
    client.set_registered_model_alias(model, "production", "2")
    s = Setup(api)
    s.rule(actions=[{"type": "rollback", "alias": "production", "model_name": model, "allow_protected": True}])
    t0 = int(time.time() * 1000) - 120_000
    s.traffic(shift=1.5, ts_ms=t0)
    s.evaluate(t0 + 1000)
    deadline = time.time() + 15
    while time.time() < deadline and client.get_model_version_by_alias(model, "production").version != "1":
        time.sleep(0.2)
    assert client.get_model_version_by_alias(model, "production").version == "1"


def test_metrics_page_counts_firing_alerts(aserver, api):
    s = Setup(api)
    rule = s.rule()
    t0 = int(time.time() * 1000) - 120_000
    s.traffic(shift=1.5, ts_ms=t0)
    s.evaluate(t0 + 1000)
    text = requests.get(aserver.url + "/metrics", timeout=30).text
    assert f'modelyard_alerts{{alertname="{rule["name"]}",project="default",severity="warning",state="firing"}} 1.0' \
        in text


@pytest.mark.parametrize("url,fragment", [
    ("http://hooks.example.com/alert", "scheme"),  # https only by default
    ("https://127.0.0.1:9/alert", "non-public address 127.0.0.1"),
    ("https://169.254.169.254/latest/meta-data", "non-public address 169.254.169.254"),
    ("https://[::1]/alert", "non-public address ::1"),
    ("https://localhost/alert", "non-public address"),
])
def test_a_server_with_default_settings_refuses_channels_and_actions_that_would_call_private_addresses(
        fresh_server, url, fragment):
    """The server itself calls a channel's or an action's URL: only public https ones by default,
    as for registry webhooks (--webhook-allowed-schemes, --webhook-allow-private-ips)."""
    api = Api(fresh_server("--disable-monitor-scheduler").url)
    channel, rule = name("ch"), name("rule")
    for kind, body in (("webhook", {"url": url}), ("slack", {"url": url})):
        r = api.raw("POST", "/notification-channels/create", json={"name": channel, "type": kind, "config": body})
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", r.text
        assert fragment in r.json()["message"], r.text
    assert api.get("/notification-channels/list")["channels"] == []
    r = api.raw("POST", "/alert-rules/create",
                json={"name": rule, "expr": "x > 1", "actions": [{"type": "webhook", "url": url}]})
    assert r.status_code == 400 and fragment in r.json()["message"], r.text
    assert api.raw("GET", "/alert-rules/get", params={"name": rule}).status_code == 404


def test_an_unknown_silence_or_rule_is_a_404(api):
    with pytest.raises(ApiError) as exc:
        api.post("/silences/expire", {"silence_id": "nope"})
    assert exc.value.status == 404
    with pytest.raises(ApiError) as exc:
        api.delete("/alert-rules/delete", {"name": "nope"})
    assert exc.value.status == 404
    assert api.raw("POST", "/silences/create", json={"matchers": [{"name": "a", "value": "b"}]}).status_code == 400


def test_retention_forgets_old_resolved_alerts_history_and_deliveries_but_keeps_open_ones(tmp_path):
    import asyncio

    import sqlalchemy as sa

    from modelyard.store.alerts import AlertStore, event_sync
    from modelyard.store.db import Database
    from modelyard.store.migrate import upgrade
    from modelyard.store.notifications import NotificationStore, enqueue_sync
    from modelyard.store.schema import alert_events, alerts as alerts_table, notification_deliveries

    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    upgrade(db.write_engine)
    db.start()
    old, now = 1_000, int(time.time() * 1000)

    def seed(conn):
        for i, (state, resolved) in enumerate((("resolved", old), ("firing", None), ("resolved", now))):
            conn.execute(alerts_table.insert().values(
                alert_id=f"a{i}", project="default", rule_id="r", fingerprint=f"f{i}", labels="{}", state=state,
                active_at_ms=old, resolved_at_ms=resolved, last_eval_ms=old))
        event_sync(conn, "default", "firing", "r", ts=old)
        event_sync(conn, "default", "resolved", "r", ts=now)
        enqueue_sync(conn, "default", "c", {"type": "webhook", "config": {}}, "firing", {}, "r", "g", old)
        conn.execute(notification_deliveries.update().values(status="sent"))
        enqueue_sync(conn, "default", "c", {"type": "webhook", "config": {}}, "firing", {}, "r", "g", old)

    async def run():
        await db.write(seed)
        await AlertStore(db).drop_before(now - 1000)
        await NotificationStore(db).drop_before(now - 1000)

        def read(conn):
            return (sorted(r.alert_id for r in conn.execute(sa.select(alerts_table.c.alert_id))),
                    [r.kind for r in conn.execute(sa.select(alert_events.c.kind))],
                    [r.status for r in conn.execute(sa.select(notification_deliveries.c.status))])

        return await db.read(read)

    try:
        assert asyncio.run(run()) == (["a1", "a2"], ["resolved"], ["pending"])
    finally:
        db.close()
