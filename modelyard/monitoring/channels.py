"""Notification channels: a generic JSON webhook, a Slack-compatible webhook and email over SMTP.

Each channel type validates its configuration when the channel is created and sends one
notification with :func:`send` (blocking; the scheduler runs it in a thread). The generic webhook
posts Alertmanager's webhook body, so receivers written for Alertmanager work unchanged; Slack (and
Mattermost, Rocket.Chat, ...) get ``{"text": ...}``; email gets a plain-text summary.
"""
from __future__ import annotations

import http.client
import smtplib
import ssl
from email.message import EmailMessage

import orjson

from modelyard import outbound
from modelyard.errors import MlflowError

__all__ = ["CHANNEL_TYPES", "validate_config", "send", "render_text", "DeliveryError"]

CHANNEL_TYPES = ("webhook", "slack", "email")
_TIMEOUT = 10


class DeliveryError(Exception):
    """A send that failed; the message is recorded on the delivery and it is retried."""


def validate_config(type_: str, config: dict) -> dict:
    """The configuration as stored, or ValueError saying what is wrong."""
    if type_ not in CHANNEL_TYPES:
        raise ValueError(f"channel type is one of: {', '.join(CHANNEL_TYPES)}")
    if not isinstance(config, dict):
        raise ValueError("config is an object")
    if type_ in ("webhook", "slack"):
        url = config.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError("config.url is an http:// or https:// URL")
        headers = config.get("headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ValueError("config.headers is an object of strings")
        out = {"url": url}
        if headers:
            out["headers"] = headers
        return out
    to = config.get("to")
    if isinstance(to, str):
        to = [to]
    if not to or not all(isinstance(a, str) and "@" in a for a in to):
        raise ValueError("config.to is an email address or a list of them")
    sender = config.get("from")
    if not isinstance(sender, str) or "@" not in sender:
        raise ValueError("config.from is an email address")
    host = config.get("host")
    if not isinstance(host, str) or not host:
        raise ValueError("config.host is the SMTP server's host name")
    port = config.get("port", 25)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError("config.port is a port number")
    out = {"host": host, "port": port, "from": sender, "to": to,
           "starttls": bool(config.get("starttls", False)), "ssl": bool(config.get("ssl", False))}
    for key in ("username", "password"):
        if config.get(key) is not None:
            if not isinstance(config[key], str):
                raise ValueError(f"config.{key} is a string")
            out[key] = config[key]
    return out


def render_text(payload: dict) -> tuple[str, str]:
    """(subject, body) of a notification, for chat and email."""
    status = payload.get("status", "firing")
    alerts = payload.get("alerts", [])
    rule = payload.get("rule", "alert")
    icon = {"firing": "[FIRING]", "resolved": "[RESOLVED]"}.get(status, f"[{status.upper()}]")
    group = ", ".join(f"{k}={v}" for k, v in (payload.get("groupLabels") or {}).items())
    subject = f"{icon} {rule} ({len(alerts)} alert{'s' if len(alerts) != 1 else ''}){' ' + group if group else ''}"
    lines = [subject, ""]
    for a in alerts:
        labels = a.get("labels", {})
        shown = ", ".join(f"{k}={v}" for k, v in labels.items() if k not in ("alertname",))
        value = a.get("value")
        lines.append(f"- {shown}" + (f" value={value:.4g}" if isinstance(value, (int, float)) else ""))
        for k, v in (a.get("annotations") or {}).items():
            lines.append(f"    {k}: {v}")
    return subject, "\n".join(lines)


def _post(settings, url: str, body: dict, headers: dict | None) -> None:
    """POST a JSON body, under the rules of :mod:`modelyard.outbound` (allowed schemes, public addresses)."""
    headers = {"Content-Type": "application/json", "User-Agent": "modelyard", **(headers or {})}
    try:
        status, _ = outbound.post(settings, url, orjson.dumps(body), headers, timeout=_TIMEOUT)
    except (outbound.Refused, MlflowError) as exc:
        raise DeliveryError(f"refused {url}: {exc}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(f"cannot reach {url}: {exc}") from None
    if status >= 400:
        raise DeliveryError(f"HTTP {status} from {url}")


def send(target: dict, payload: dict, settings) -> None:
    """Send one notification to ``target`` ({type, config}); raises :class:`DeliveryError`."""
    type_, config = target.get("type"), target.get("config") or {}
    if type_ == "webhook":
        _post(settings, config["url"], payload, config.get("headers"))
    elif type_ == "slack":
        subject, body = render_text(payload)
        _post(settings, config["url"], {"text": body}, config.get("headers"))
    elif type_ == "email":
        subject, body = render_text(payload)
        msg = EmailMessage()
        msg["Subject"], msg["From"], msg["To"] = subject, config["from"], ", ".join(config["to"])
        msg.set_content(body)
        try:
            if config.get("ssl"):
                smtp = smtplib.SMTP_SSL(config["host"], config["port"], timeout=_TIMEOUT,
                                        context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(config["host"], config["port"], timeout=_TIMEOUT)
            with smtp:
                if config.get("starttls"):
                    smtp.starttls(context=ssl.create_default_context())
                if config.get("username"):
                    smtp.login(config["username"], config.get("password", ""))
                smtp.send_message(msg)
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP {config['host']}:{config['port']}: {exc}") from None
    else:
        raise DeliveryError(f"unknown channel type {type_!r}")
