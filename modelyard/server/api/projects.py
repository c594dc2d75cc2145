"""Projects, members, access tokens, users and audit events (modelyard's own API).

Paths are relative to ``/api/modelyard/v1``; under ``/p/<project>/...`` they act on that
project, on bare paths on the project ``default``.
"""
from __future__ import annotations

from modelyard.errors import MlflowError
from modelyard.server.routing import Context, Endpoint
from modelyard.server.schema import BOOL, INT64, STRING, Field, Repeated, Schema
from modelyard.store.projects import ROLES, role_at_least

__all__ = ["ENDPOINTS"]


def _stores(ctx: Context):
    return ctx.services.stores


async def whoami(ctx: Context, a: dict) -> dict:
    p = ctx.principal
    return {"user": {"username": p.username, "is_admin": p.is_admin and p.token_project is None,
                     "scopes": sorted(p.scopes), "roles": dict(p.roles), "token_project": p.token_project}}


async def list_projects(ctx: Context, a: dict) -> dict:
    p = ctx.principal
    if p.is_admin and p.token_project is None:
        return {"projects": await _stores(ctx).projects.list()}
    names = [p.token_project] if p.token_project else sorted(p.roles)
    return {"projects": await _stores(ctx).projects.list(names)}


async def create_project(ctx: Context, a: dict) -> dict:
    owner = ctx.principal.user_id or None
    project = await _stores(ctx).projects.create(a["name"], a["description"], a["protected_aliases"] or None, owner)
    return {"project": project}


async def get_project(ctx: Context, a: dict) -> dict:
    return {"project": await _stores(ctx).projects.get(ctx.project)}


async def update_project(ctx: Context, a: dict) -> dict:
    aliases = a["protected_aliases"] if a["set_protected_aliases"] else None
    return {"project": await _stores(ctx).projects.update(ctx.project, a["description"], aliases)}


def _check_grant(ctx: Context, role: str) -> None:
    if role not in ROLES:
        raise MlflowError.invalid(f"Invalid role {role!r}; one of {list(ROLES)}.")
    mine = ctx.principal.role_in(ctx.project)
    if not role_at_least(mine, role):
        raise MlflowError(f"Permission denied: your role {mine} cannot grant the role {role}.", "PERMISSION_DENIED")


async def list_members(ctx: Context, a: dict) -> dict:
    return {"members": await _stores(ctx).projects.members(ctx.project)}


async def set_member(ctx: Context, a: dict) -> dict:
    _check_grant(ctx, a["role"])
    return {"member": await _stores(ctx).projects.set_member(ctx.project, a["username"], a["role"])}


async def remove_member(ctx: Context, a: dict) -> dict:
    await _stores(ctx).projects.remove_member(ctx.project, a["username"])
    return {}


async def list_project_tokens(ctx: Context, a: dict) -> dict:
    return {"tokens": await _stores(ctx).tokens.list_tokens(project=ctx.project)}


async def create_project_token(ctx: Context, a: dict) -> dict:
    _check_grant(ctx, a["role"])
    token = await _stores(ctx).tokens.create_project_token(ctx.project, a["name"], a["role"], a["scopes"],
                                                           a["expires_at"])
    return {"token": token}


async def revoke_project_token(ctx: Context, a: dict) -> dict:
    await _stores(ctx).tokens.revoke(a["token_id"], project=ctx.project)
    return {}


async def list_my_tokens(ctx: Context, a: dict) -> dict:
    return {"tokens": await _stores(ctx).tokens.list_tokens(username=ctx.principal.username)}


async def create_my_token(ctx: Context, a: dict) -> dict:
    if ctx.principal.token_project is not None:
        raise MlflowError("A project access token cannot create personal tokens.", "PERMISSION_DENIED")
    token = await _stores(ctx).tokens.create_personal_token(ctx.principal.username, a["name"], a["scopes"],
                                                            a["expires_at"])
    return {"token": token}


async def revoke_my_token(ctx: Context, a: dict) -> dict:
    await _stores(ctx).tokens.revoke(a["token_id"], username=ctx.principal.username)
    return {}


async def create_user(ctx: Context, a: dict) -> dict:
    return {"user": await _stores(ctx).tokens.create_user(a["username"], a["is_admin"] or False)}


async def list_users(ctx: Context, a: dict) -> dict:
    return {"users": await _stores(ctx).tokens.list_users()}


async def audit_events(ctx: Context, a: dict) -> dict:
    limit = a["max_results"] or 100
    if not 0 < limit <= 1000:
        raise MlflowError.invalid("max_results must be between 1 and 1000.")
    events = await ctx.services.audit.list(ctx.project, limit, a["before_ms"], a["actor"], a["action"])
    return {"events": events}


_SCOPES = Field("scopes", Repeated(STRING), required=True)
_EXPIRES = Field("expires_at", INT64)

ENDPOINTS = [
    Endpoint("GET", "/user", whoami, access="authenticated"),
    Endpoint("GET", "/user/tokens", list_my_tokens, access="authenticated"),
    Endpoint("POST", "/user/tokens", create_my_token, Schema(
        Field("name", STRING, required=True), _SCOPES, _EXPIRES), access="account"),
    Endpoint("DELETE", "/user/tokens", revoke_my_token, Schema(Field("token_id", STRING, required=True)),
             access="account"),
    Endpoint("GET", "/projects", list_projects, access="authenticated"),
    Endpoint("POST", "/projects", create_project, Schema(
        Field("name", STRING, required=True), Field("description", STRING),
        Field("protected_aliases", Repeated(STRING))), access="admin"),
    Endpoint("GET", "/project", get_project, access="read"),
    Endpoint("PATCH", "/project", update_project, Schema(
        Field("description", STRING), Field("protected_aliases", Repeated(STRING)),
        Field("set_protected_aliases", BOOL, default=False)), access="owner"),
    Endpoint("GET", "/project/members", list_members, access="read"),
    Endpoint("POST", "/project/members", set_member, Schema(
        Field("username", STRING, required=True), Field("role", STRING, required=True)), access="manage"),
    Endpoint("DELETE", "/project/members", remove_member, Schema(Field("username", STRING, required=True)),
             access="manage"),
    Endpoint("GET", "/project/tokens", list_project_tokens, access="manage"),
    Endpoint("POST", "/project/tokens", create_project_token, Schema(
        Field("name", STRING, required=True), Field("role", STRING, required=True), _SCOPES, _EXPIRES),
        access="manage"),
    Endpoint("DELETE", "/project/tokens", revoke_project_token, Schema(Field("token_id", STRING, required=True)),
             access="manage"),
    Endpoint("GET", "/project/audit-events", audit_events, Schema(
        Field("max_results", INT64), Field("before_ms", INT64), Field("actor", STRING), Field("action", STRING)),
        access="manage"),
    Endpoint("GET", "/users", list_users, access="admin"),
    Endpoint("POST", "/users", create_user, Schema(
        Field("username", STRING, required=True), Field("is_admin", BOOL)), access="admin"),
]
