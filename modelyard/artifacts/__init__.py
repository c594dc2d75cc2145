"""Artifact repositories: where run and model files live (a directory or an S3 bucket).

The server proxies every artifact (MLflow's ``mlflow-artifacts:/`` scheme), so one repository
holds them all, in MLflow's layout: ``<exp>/<run>/artifacts/...`` for runs and
``<exp>/models/<model_id>/artifacts/...`` for logged models.

Paths handed to a repository are relative, ``/``-separated and already validated by
:func:`clean_path`; a repository never sees ``..``, an absolute path or a control character.
Files stream in and out in chunks: no method holds a whole file in memory.
"""
from __future__ import annotations

import posixpath
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import AsyncIterator
from urllib.parse import unquote, urlparse

from modelyard.errors import MlflowError

__all__ = [
    "ArtifactRepository", "ArtifactStream", "FileInfo", "CHUNK", "basename", "clean_path", "join",
    "open_repository", "relative_to_root",
]

CHUNK = 1024 * 1024  # the client reads downloads in 1 MB chunks too

# The route every mlflow-artifacts URI resolves to (``http://host/api/2.0/mlflow-artifacts/artifacts/x``).
_HTTP_ANCHOR = "/api/2.0/mlflow-artifacts/artifacts/"
# C0 control characters and DEL: NUL truncates paths in C libraries, and S3 lists keys in XML 1.0,
# which cannot carry most of the others.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_MAX_DECODES = 10


@dataclass(frozen=True)
class FileInfo:
    """One entry of a listing. ``path`` is relative to the repository root."""

    path: str
    is_dir: bool
    file_size: int | None = None

    def to_dict(self, path: str | None = None) -> dict:
        """MLflow's ``FileInfo`` message; ``path`` overrides the stored one (listings send names)."""
        d = {"path": self.path if path is None else path, "is_dir": self.is_dir}
        if not self.is_dir and self.file_size is not None:
            d["file_size"] = self.file_size
        return d


@dataclass
class ArtifactStream:
    """An opened file: its size, known before the first byte is sent, and its chunks."""

    size: int
    chunks: AsyncIterator[bytes]


def clean_path(path: str | None) -> str:
    """Validate a client-supplied artifact path and return it normalised (``a/b/c``).

    ``path`` is what the HTTP layer decoded once. It is rejected with INVALID_PARAMETER_VALUE
    "Invalid path" if any level of further percent-decoding (``%2e%2e``, ``%252e%252e``, ...)
    yields a ``..`` segment, an absolute or drive path, a backslash or a control character, so a
    path that some later component decodes again can never escape the root. The returned path is
    the once-decoded one, with empty and ``.`` segments dropped.
    """
    if path is None:
        return ""
    level = path
    for _ in range(_MAX_DECODES):
        _reject_unsafe(level)
        decoded = unquote(level)
        if decoded == level:
            break
        level = decoded
    else:
        raise MlflowError.invalid("Invalid path")
    return "/".join(p for p in path.split("/") if p not in ("", "."))


def _reject_unsafe(path: str) -> None:
    if (
        _CONTROL.search(path)
        or "\\" in path
        or path.startswith("/")
        or _DRIVE.match(path)
        or ".." in path.split("/")
    ):
        raise MlflowError.invalid("Invalid path")


def join(*parts: str) -> str:
    """Join cleaned relative paths, skipping empty ones."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class ArtifactRepository(ABC):
    """The interface every backend implements. All methods take cleaned relative paths.

    ``uri`` is the root the repository was opened on (a directory or ``s3://bucket/prefix``).
    """

    uri: str

    @abstractmethod
    async def write(self, path: str, chunks: AsyncIterator[bytes]) -> int:
        """Store a file from a stream of chunks; it appears whole or not at all. Returns its size.

        A failure of the stream (client gone) leaves no file behind.
        """

    @abstractmethod
    async def open(self, path: str) -> ArtifactStream:
        """Open a file for streaming; RESOURCE_DOES_NOT_EXIST if there is no file at ``path``."""

    @abstractmethod
    async def size(self, path: str) -> int | None:
        """The size of a file, or None if there is no file at ``path``."""

    @abstractmethod
    async def list(self, path: str) -> list[FileInfo]:
        """Direct children of a directory, sorted by path (empty when it does not exist)."""

    @abstractmethod
    async def delete(self, path: str) -> None:
        """Delete a file, or a whole directory with everything under it. Missing is not an error."""

    async def read(self, path: str) -> AsyncIterator[bytes]:
        """Stream a file's bytes; RESOURCE_DOES_NOT_EXIST if it is missing."""
        stream = await self.open(path)
        async for chunk in stream.chunks:
            yield chunk

    async def close(self) -> None:
        """Release connections; the repository is not used afterwards."""

    def path_for_uri(self, uri: str) -> str | None:
        """The repository path behind an artifact URI stored on a run, model or experiment.

        ``mlflow-artifacts:/x`` (what the server hands out) and the HTTP form the client resolves
        it to map to ``x``; a URI inside this repository's own root maps to its relative part.
        Returns None for a location this server does not hold.
        """
        parsed = urlparse(uri)
        if parsed.scheme == "mlflow-artifacts":
            return parsed.path.lstrip("/")
        if parsed.scheme in ("http", "https") and _HTTP_ANCHOR in parsed.path + "/":
            return (parsed.path + "/").split(_HTTP_ANCHOR, 1)[1].strip("/")
        return self._own_path(uri)

    @abstractmethod
    def _own_path(self, uri: str) -> str | None:
        """The relative path of ``uri`` if it lies under this repository's root, else None."""


def relative_to_root(uri: str, root: str) -> str | None:
    """``uri`` relative to ``root`` when it equals it or lies beneath it (plain string paths)."""
    root = root.rstrip("/")
    if uri.rstrip("/") == root:
        return ""
    if uri.startswith(root + "/"):
        return uri[len(root) + 1:].strip("/")
    return None


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def open_repository(uri: str, endpoint_url: str | None = None, spool_dir: str | None = None) -> ArtifactRepository:
    """The repository for ``--artifacts-uri``: ``s3://bucket/prefix`` or a local directory.

    ``spool_dir`` is where uploads to S3 wait on disk before they are sent (default: the system's
    temporary directory, which may live in memory).
    """
    if uri.startswith("s3://"):
        from modelyard.artifacts.s3 import S3Repository

        return S3Repository(uri, endpoint_url=endpoint_url, spool_dir=spool_dir)
    from modelyard.artifacts.local import LocalRepository

    return LocalRepository(uri[len("file://"):] if uri.startswith("file://") else uri)
