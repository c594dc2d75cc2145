"""Outbound HTTP to URLs that users configure: registry webhooks, alert channels and alert actions.

The server calls these URLs itself, so whoever may configure one could otherwise make it reach
what only the server can reach (a cloud metadata endpoint, an internal admin port): server-side
request forgery. By default only ``https`` URLs to public addresses are accepted
(``--webhook-allowed-schemes``, ``--webhook-allow-private-ips``). The address is checked when the
URL is saved and again on the connected socket, so a DNS answer that changes in between cannot
reach an internal service. Email channels are not covered: an SMTP relay is usually a private host.
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from urllib.parse import urlsplit

import anyio.to_thread

from modelyard.errors import MlflowError

__all__ = ["Refused", "check", "check_url", "check_public", "is_public", "post"]


class Refused(Exception):
    """The connection reached an address the server may not call."""


def check_url(url: str, settings) -> None:
    """A 400 unless ``url`` is well formed, has a hostname and an allowed scheme."""
    if not url or not url.strip():
        raise MlflowError.invalid(f"Webhook URL cannot be empty or just whitespace: {url!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise MlflowError.invalid(f"Invalid webhook URL {url!r}: {exc!r}") from None
    schemes = [s.strip() for s in settings.webhook_allowed_schemes.split(",") if s.strip()]
    if parts.scheme not in schemes:
        raise MlflowError.invalid(f"Invalid webhook URL scheme: {parts.scheme!r}. Allowed schemes are: "
                                  f"{', '.join(schemes)}.")
    if not parts.hostname:
        raise MlflowError.invalid(f"Webhook URL must include a hostname: {url!r}")


async def check_public(host: str, settings) -> None:
    """A 400 if ``host`` resolves to a loopback, private, link-local or reserved address."""
    if settings.webhook_allow_private_ips:
        return
    try:
        infos = await anyio.to_thread.run_sync(socket.getaddrinfo, host, None)
    except socket.gaierror as exc:
        raise MlflowError.invalid(f"Webhook URL hostname {host!r} does not resolve: {exc}") from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not is_public(ip):
            raise MlflowError.invalid(f"Webhook URL hostname {host!r} resolves to the non-public address {ip}; "
                                      "start the server with --webhook-allow-private-ips to allow it.")


async def check(url: str, settings) -> None:
    """Both checks, as a URL is saved."""
    check_url(url, settings)
    await check_public(urlsplit(url).hostname, settings)


def is_public(ip) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved
                                 or ip.is_multicast or ip.is_unspecified)


def post(settings, url: str, data: bytes, headers: dict, timeout: float | None = None) -> tuple[int, str]:
    """POST ``data`` (blocking); (status, the first 64 kB of the answer). Raises :class:`Refused`,
    ``MlflowError`` for a URL no longer allowed, ``OSError`` and ``http.client.HTTPException``."""
    check_url(url, settings)
    parts = urlsplit(url)
    timeout = settings.webhook_timeout if timeout is None else timeout
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.connect()
        if not settings.webhook_allow_private_ips:
            peer = ipaddress.ip_address(conn.sock.getpeername()[0].split("%", 1)[0])
            if not is_public(peer):
                raise Refused(f"connection blocked: {peer} is not a public address")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request("POST", path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(64 * 1024).decode(errors="replace")
    finally:
        conn.close()
