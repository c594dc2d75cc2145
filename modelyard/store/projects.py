"""Projects (namespaces for everything) and their members."""
from __future__ import annotations

import re

import orjson
import sqlalchemy as sa

from modelyard.errors import MlflowError
from modelyard.store._common import now_ms
from modelyard.store.db import Database
from modelyard.store.schema import project_members as PM
from modelyard.store.schema import projects as P
from modelyard.store.schema import users as U

__all__ = ["ProjectStore", "ROLES", "DEFAULT_PROJECT", "role_at_least"]

DEFAULT_PROJECT = "default"
DEFAULT_PROTECTED_ALIASES = ["production", "champion"]
# GitLab's roles, weakest first.
ROLES = ("guest", "reporter", "developer", "maintainer", "owner")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")


def role_at_least(role: str | None, needed: str) -> bool:
    return role is not None and ROLES.index(role) >= ROLES.index(needed)


def validate_project_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith((".", "-")):
        raise MlflowError.invalid(
            f"Invalid project name {name!r}: use 1-64 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.")


def _project(row) -> dict:
    return {"name": row.name, "description": row.description or "",
            "protected_aliases": orjson.loads(row.protected_aliases), "created_at": row.created_at}


class ProjectStore:
    def __init__(self, db: Database, experiments):
        self.db = db
        self.experiments = experiments  # a new project gets its own Default experiment

    def ensure_default(self) -> None:
        def create(conn):
            if conn.execute(sa.select(P.c.name).where(P.c.name == DEFAULT_PROJECT)).first() is None:
                conn.execute(P.insert().values(name=DEFAULT_PROJECT, description="The project of bare URLs.",
                                               protected_aliases=orjson.dumps(DEFAULT_PROTECTED_ALIASES).decode(),
                                               created_at=now_ms()))

        try:
            self.db.write_sync(create)
        except sa.exc.IntegrityError:
            pass  # another worker made it first

    def create_sync(self, conn, name: str, description: str | None = None,
                    protected_aliases: list[str] | None = None) -> dict:
        validate_project_name(name)
        if conn.execute(sa.select(P.c.name).where(P.c.name == name)).first():
            raise MlflowError.exists(f"Project '{name}' already exists.")
        row = {"name": name, "description": description,
               "protected_aliases": orjson.dumps(DEFAULT_PROTECTED_ALIASES if protected_aliases is None
                                                 else protected_aliases).decode(),
               "created_at": now_ms()}
        conn.execute(P.insert().values(row))
        self.experiments.create_sync(conn, name, "Default")
        return _project(conn.execute(sa.select(P).where(P.c.name == name)).first())

    async def create(self, name: str, description: str | None, protected_aliases: list[str] | None,
                     owner_user_id: str | None) -> dict:
        def create(conn):
            project = self.create_sync(conn, name, description, protected_aliases)
            if owner_user_id:
                conn.execute(PM.insert().values(project=name, user_id=owner_user_id, role="owner", created_at=now_ms()))
            return project

        return await self.db.write(create)

    async def get(self, name: str) -> dict:
        def get(conn):
            row = conn.execute(sa.select(P).where(P.c.name == name)).first()
            if row is None:
                raise MlflowError.not_found(f"Project '{name}' not found.")
            return _project(row)

        return await self.db.read(get)

    def get_sync(self, name: str) -> dict | None:
        row = self.db.read_sync(lambda conn: conn.execute(sa.select(P).where(P.c.name == name)).first())
        return None if row is None else _project(row)

    async def list(self, names: list[str] | None = None) -> list[dict]:
        def read(conn):
            q = sa.select(P).order_by(P.c.name)
            if names is not None:
                q = q.where(P.c.name.in_(names))
            return [_project(r) for r in conn.execute(q)]

        return await self.db.read(read)

    async def update(self, name: str, description: str | None, protected_aliases: list[str] | None) -> dict:
        def update(conn):
            if conn.execute(sa.select(P.c.name).where(P.c.name == name)).first() is None:
                raise MlflowError.not_found(f"Project '{name}' not found.")
            values = {}
            if description is not None:
                values["description"] = description
            if protected_aliases is not None:
                values["protected_aliases"] = orjson.dumps(protected_aliases).decode()
            if values:
                conn.execute(P.update().where(P.c.name == name).values(values))
            return _project(conn.execute(sa.select(P).where(P.c.name == name)).first())

        return await self.db.write(update)

    # -- members --------------------------------------------------------------------------------
    def set_member_sync(self, conn, project: str, user_id: str, role: str) -> None:
        if role not in ROLES:
            raise MlflowError.invalid(f"Invalid role {role!r}; one of {list(ROLES)}.")
        if conn.execute(sa.select(P.c.name).where(P.c.name == project)).first() is None:
            raise MlflowError.not_found(f"Project '{project}' not found.")
        if conn.execute(sa.select(U.c.user_id).where(U.c.user_id == user_id)).first() is None:
            raise MlflowError.not_found(f"User '{user_id}' not found.")
        conn.execute(self.db.upsert(PM, ["project", "user_id"],
                                    {"project": project, "user_id": user_id, "role": role, "created_at": now_ms()},
                                    update=["role"]))

    async def set_member(self, project: str, username: str, role: str) -> dict:
        def write(conn):
            user = conn.execute(sa.select(U.c.user_id).where(U.c.username == username)).first()
            if user is None:
                raise MlflowError.not_found(f"User '{username}' not found.")
            self.set_member_sync(conn, project, user.user_id, role)
            return {"project": project, "username": username, "role": role}

        return await self.db.write(write)

    async def remove_member(self, project: str, username: str) -> None:
        def write(conn):
            user = conn.execute(sa.select(U.c.user_id).where(U.c.username == username)).first()
            if user is None or conn.execute(PM.delete().where(PM.c.project == project,
                                                              PM.c.user_id == user.user_id)).rowcount == 0:
                raise MlflowError.not_found(f"'{username}' is not a member of project '{project}'.")

        await self.db.write(write)

    async def members(self, project: str) -> list[dict]:
        def read(conn):
            rows = conn.execute(sa.select(U.c.username, U.c.is_bot, PM.c.role, PM.c.created_at)
                                .join(U, U.c.user_id == PM.c.user_id).where(PM.c.project == project)
                                .order_by(U.c.username))
            return [{"username": r.username, "role": r.role, "bot": bool(r.is_bot), "since": r.created_at}
                    for r in rows]

        return await self.db.read(read)
