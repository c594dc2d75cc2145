"""Who is asking, and may they: tokens, roles per project, access levels per route.

Every route declares an access level. With auth off (the default on a laptop) every request is
the anonymous owner of every project; with ``--auth`` a request carries a token as
``Authorization: Bearer <token>`` (``MLFLOW_TRACKING_TOKEN``) or as the password of Basic auth
(``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``), or the UI's session cookie.

Tokens are looked up by hash and the answer cached for two seconds, so a busy client costs no
database round trip per request and a revocation takes effect within two seconds per process.
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time

import anyio.to_thread

from modelyard.errors import MlflowError
from modelyard.store.projects import role_at_least
from modelyard.store.tokens import Principal, TokenStore

__all__ = ["Authenticator", "ANONYMOUS", "ACCESS_LEVELS", "allowed", "check", "SESSION_COOKIE", "CSRF_COOKIE"]

log = logging.getLogger("modelyard.auth")

# Access levels, from open to closed. Project levels need a role in the request's project.
# "account": any signed-in user changing their own account (their tokens), which needs the api scope.
ACCESS_LEVELS = ("public", "authenticated", "account", "read", "write", "delete", "manage", "owner", "admin")
_ROLE_FOR = {"read": "guest", "write": "developer", "delete": "maintainer", "manage": "maintainer", "owner": "owner"}
_WRITE_LEVELS = {"account", "write", "delete", "manage", "owner", "admin"}

ANONYMOUS = Principal(user_id="", username="anonymous", is_admin=True, scopes=frozenset({"api", "read_api"}))

SESSION_COOKIE = "modelyard_session"
CSRF_COOKIE = "modelyard_csrf"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_CACHE_SECONDS = 2.0


def allowed(principal: Principal | None, project: str, access: str) -> bool:
    """The access rule, as a pure function (the route-by-role test checks it against the server)."""
    if access == "public":
        return True
    if principal is None:
        return False
    if access in _WRITE_LEVELS and "api" not in principal.scopes:
        return False
    if access in ("authenticated", "account"):
        return True
    if access == "admin":
        return principal.is_admin and principal.token_project is None
    return role_at_least(principal.role_in(project), _ROLE_FOR[access])


class Authenticator:
    def __init__(self, tokens: TokenStore, enabled: bool, failure_delay_ms: int = 500):
        self.tokens = tokens
        self.enabled = enabled
        self.failure_delay = failure_delay_ms / 1000
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def principal(self, headers, client_ip: str | None, session_token: str | None = None) -> Principal | None:
        """The request's principal; None when no credentials were sent. Bad credentials: 401."""
        if not self.enabled:
            return ANONYMOUS
        token, username = _credentials(headers.get("authorization")), None
        if isinstance(token, tuple):
            username, token = token
        token = token or session_token
        if token is None:
            return None
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and hit[0] > now:
            principal = hit[1]
        else:
            principal = await anyio.to_thread.run_sync(self.tokens.principal_sync, token)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (now + _CACHE_SECONDS, principal)
        if principal is not None and principal.expires_at is not None and principal.expires_at <= time.time() * 1000:
            principal = None
        if principal is None or (username is not None and username != principal.username):
            # Slow down guessing, and leave a trace that names the source but never the token.
            log.warning("failed authentication from %s (username %r)", client_ip, username)
            await asyncio.sleep(self.failure_delay)
            raise MlflowError("Invalid, expired or revoked access token.", "UNAUTHENTICATED")
        return principal

    def check_request(self, principal: Principal | None, project: str, access: str, what: str, request) -> None:
        """The access check, plus CSRF protection for requests carried by the UI's session cookie:
        a change must echo the CSRF cookie in a header, which another site's page cannot read."""
        if (self.enabled and request.method not in _SAFE_METHODS and "authorization" not in request.headers
                and request.cookies.get(SESSION_COOKIE)):
            sent, expected = request.headers.get(CSRF_HEADER), request.cookies.get(CSRF_COOKIE)
            if not sent or not expected or not hmac.compare_digest(sent, expected):
                raise MlflowError("Missing or wrong CSRF token: send the modelyard_csrf cookie's value "
                                  f"in the {CSRF_HEADER} header.", "PERMISSION_DENIED")
        check(principal, project, access, what)


def check(principal: Principal | None, project: str, access: str, what: str) -> None:
    """Raise UNAUTHENTICATED (401) or PERMISSION_DENIED (403), with the reason, unless allowed."""
    if allowed(principal, project, access):
        return
    if principal is None:
        raise MlflowError(f"Authentication required to {what}: send an access token "
                          "(MLFLOW_TRACKING_TOKEN).", "UNAUTHENTICATED")
    role = principal.role_in(project)
    needed = _ROLE_FOR.get(access, "an administrator" if access == "admin" else access)
    if access in _WRITE_LEVELS and "api" not in principal.scopes:
        reason = "the token has only the read_api scope"
    elif access == "admin":
        reason = "this needs a server administrator"
    elif role is None:
        reason = f"you are not a member of project '{project}'"
    else:
        reason = f"your role in project '{project}' is {role}; this needs {needed} or above"
    raise MlflowError(f"Permission denied to {what}: {reason}.", "PERMISSION_DENIED")


def _credentials(header: str | None):
    """A bearer token, a (username, token) pair from Basic auth, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and value.strip():
        return value.strip()
    if scheme == "basic":
        try:
            username, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except Exception:  # noqa: BLE001 - malformed header
            raise MlflowError("Malformed Basic authorization header.", "UNAUTHENTICATED") from None
        return (username, password) if password else None
    raise MlflowError("Unsupported authorization scheme; use Bearer or Basic.", "UNAUTHENTICATED")
