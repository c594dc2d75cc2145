"""Users and access tokens (personal and project), stored as hashes only."""
from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa

from modelyard.errors import MlflowError
from modelyard.store._common import now_ms
from modelyard.store.db import Database
from modelyard.store.projects import ROLES
from modelyard.store.schema import access_tokens as T
from modelyard.store.schema import project_members as PM
from modelyard.store.schema import users as U

__all__ = ["TokenStore", "Principal", "SCOPES", "hash_token"]

SCOPES = ("api", "read_api")
TOKEN_PREFIX = "myd_"


def hash_token(token: str) -> str:
    # Tokens carry 240 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request is: a user, the token's scopes, and the user's role per project."""

    user_id: str
    username: str
    is_admin: bool
    scopes: frozenset[str]
    roles: dict[str, str] = field(default_factory=dict)
    token_project: str | None = None  # a project token only ever works in its project
    expires_at: int | None = None

    def role_in(self, project: str) -> str | None:
        if self.token_project is not None and self.token_project != project:
            return None
        if self.is_admin:
            return "owner"
        return self.roles.get(project)


def _check_scopes(scopes: list[str]) -> str:
    if not scopes or any(s not in SCOPES for s in scopes):
        raise MlflowError.invalid(f"Invalid scopes {scopes!r}; each one of {list(SCOPES)}.")
    return ",".join(sorted(set(scopes)))


def _token_row(r) -> dict:
    out = {"token_id": r.token_id, "name": r.name, "scopes": r.scopes.split(","), "created_at": r.created_at,
           "active": r.revoked_at is None and (r.expires_at is None or r.expires_at > now_ms())}
    for k in ("project", "expires_at", "revoked_at", "last_used_at"):
        if getattr(r, k) is not None:
            out[k] = getattr(r, k)
    return out


class TokenStore:
    def __init__(self, db: Database):
        self.db = db

    # -- users ----------------------------------------------------------------------------------
    def create_user_sync(self, conn, username: str, is_admin: bool = False, is_bot: bool = False) -> str:
        if not username or len(username) > 255 or any(c.isspace() or c == ":" for c in username):
            raise MlflowError.invalid(f"Invalid username {username!r}: no spaces or ':'.")
        if conn.execute(sa.select(U.c.user_id).where(U.c.username == username)).first():
            raise MlflowError.exists(f"User '{username}' already exists.")
        user_id = uuid.uuid4().hex
        conn.execute(U.insert().values(user_id=user_id, username=username, is_admin=is_admin, is_bot=is_bot,
                                       blocked=False, created_at=now_ms()))
        return user_id

    async def create_user(self, username: str, is_admin: bool) -> dict:
        user_id = await self.db.write(self.create_user_sync, username, is_admin)
        return {"user_id": user_id, "username": username, "is_admin": is_admin}

    async def list_users(self) -> list[dict]:
        def read(conn):
            return [{"username": r.username, "is_admin": bool(r.is_admin), "bot": bool(r.is_bot),
                     "blocked": bool(r.blocked), "created_at": r.created_at}
                    for r in conn.execute(sa.select(U).order_by(U.c.username))]

        return await self.db.read(read)

    def user_id_sync(self, conn, username: str) -> str:
        row = conn.execute(sa.select(U.c.user_id).where(U.c.username == username)).first()
        if row is None:
            raise MlflowError.not_found(f"User '{username}' not found.")
        return row.user_id

    # -- tokens ---------------------------------------------------------------------------------
    def create_token_sync(self, conn, user_id: str, name: str, scopes: list[str], expires_at: int | None,
                          project: str | None = None) -> dict:
        if not name or len(name) > 255:
            raise MlflowError.invalid("A token needs a name of 1 to 255 characters.")
        scope_text = _check_scopes(scopes)
        if expires_at is not None and expires_at <= now_ms():
            raise MlflowError.invalid("expires_at must be in the future (milliseconds since the epoch).")
        token = TOKEN_PREFIX + secrets.token_urlsafe(30)
        token_id = uuid.uuid4().hex
        conn.execute(T.insert().values(token_id=token_id, token_hash=hash_token(token), name=name, user_id=user_id,
                                       project=project, scopes=scope_text, expires_at=expires_at, created_at=now_ms()))
        return {"token_id": token_id, "name": name, "token": token, "scopes": scope_text.split(","),
                "expires_at": expires_at, "project": project}

    async def create_personal_token(self, username: str, name: str, scopes: list[str], expires_at: int | None) -> dict:
        def write(conn):
            return self.create_token_sync(conn, self.user_id_sync(conn, username), name, scopes, expires_at)

        return await self.db.write(write)

    async def create_project_token(self, project: str, name: str, role: str, scopes: list[str],
                                   expires_at: int | None) -> dict:
        """A project access token acts as a bot user that is a member of the project only."""
        if role not in ROLES:
            raise MlflowError.invalid(f"Invalid role {role!r}; one of {list(ROLES)}.")

        def write(conn):
            bot = f"project_{project}_bot_{uuid.uuid4().hex[:8]}"
            user_id = self.create_user_sync(conn, bot, is_bot=True)
            conn.execute(PM.insert().values(project=project, user_id=user_id, role=role, created_at=now_ms()))
            out = self.create_token_sync(conn, user_id, name, scopes, expires_at, project=project)
            return {**out, "role": role, "username": bot}

        return await self.db.write(write)

    async def list_tokens(self, username: str | None = None, project: str | None = None) -> list[dict]:
        def read(conn):
            q = sa.select(T).order_by(T.c.created_at)
            if username is not None:
                q = q.where(T.c.user_id == self.user_id_sync(conn, username), T.c.project.is_(None))
            if project is not None:
                q = q.where(T.c.project == project)
            return [_token_row(r) for r in conn.execute(q)]

        return await self.db.read(read)

    async def revoke(self, token_id: str, project: str | None = None, username: str | None = None) -> None:
        def write(conn):
            q = sa.select(T).where(T.c.token_id == token_id)
            if project is not None:
                q = q.where(T.c.project == project)
            if username is not None:
                q = q.where(T.c.user_id == self.user_id_sync(conn, username))
            if conn.execute(q).first() is None:
                raise MlflowError.not_found(f"Token '{token_id}' not found.")
            conn.execute(T.update().where(T.c.token_id == token_id, T.c.revoked_at.is_(None)).values(revoked_at=now_ms()))

        await self.db.write(write)

    async def revoke_by_value(self, token: str) -> None:
        """Revoke the token whose value is ``token`` (sign-out); unknown values are ignored."""

        def write(conn):
            conn.execute(T.update().where(T.c.token_hash == hash_token(token), T.c.revoked_at.is_(None))
                         .values(revoked_at=now_ms()))

        await self.db.write(write)

    async def create_session_for_project_token(self, token: str, expires_at: int) -> dict:
        """A UI session for a project token: a token of the same bot, project and scopes."""

        def write(conn):
            row = conn.execute(sa.select(T).where(T.c.token_hash == hash_token(token))).first()
            if row is None:
                raise MlflowError("Invalid token.", "UNAUTHENTICATED")
            return self.create_token_sync(conn, row.user_id, "ui session", row.scopes.split(","),
                                          expires_at, project=row.project)

        return await self.db.write(write)

    def principal_sync(self, token: str) -> Principal | None:
        """The principal a token stands for, or None if it is unknown, expired, revoked or blocked."""

        def read(conn):
            row = conn.execute(
                sa.select(T.c.scopes, T.c.expires_at, T.c.revoked_at, T.c.project, U.c.user_id, U.c.username,
                          U.c.is_admin, U.c.blocked)
                .join(U, U.c.user_id == T.c.user_id).where(T.c.token_hash == hash_token(token))).first()
            if row is None or row.revoked_at is not None or row.blocked:
                return None
            if row.expires_at is not None and row.expires_at <= now_ms():
                return None
            roles = dict(conn.execute(sa.select(PM.c.project, PM.c.role).where(PM.c.user_id == row.user_id)).all())
            return Principal(user_id=row.user_id, username=row.username, is_admin=bool(row.is_admin),
                             scopes=frozenset(row.scopes.split(",")), roles=roles, token_project=row.project,
                             expires_at=row.expires_at)

        return self.db.read_sync(read)
