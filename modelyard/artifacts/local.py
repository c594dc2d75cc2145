"""Artifacts in a local directory (the default: ``<data-dir>/artifacts``).

An upload is written to a staging file under the root (same filesystem), flushed to disk, and only
then are its folders made and the file renamed into place: a reader sees the old file or the whole
new one, and a refused or interrupted upload leaves nothing in the tree, not even a folder.
"""
from __future__ import annotations

import errno
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import AsyncIterator

import anyio
import anyio.to_thread

from modelyard.artifacts import CHUNK, ArtifactRepository, ArtifactStream, FileInfo, relative_to_root
from modelyard.errors import MlflowError

__all__ = ["LocalRepository"]

# Uploads in progress, under the root; a reserved name, hidden from listings.
STAGING = ".modelyard-uploads"
# Staged files this old were left by a crashed process (another live process may share the root,
# so younger ones are not touched).
_STALE_SECONDS = 24 * 3600


class LocalRepository(ArtifactRepository):
    """Files under one root directory; symlinks that lead outside the root are refused."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.uri = str(self.root)
        self.name_max = _pathconf(self.root, "PC_NAME_MAX", 255)
        self.path_max = _pathconf(self.root, "PC_PATH_MAX", 4096)
        self.staging = self.root / STAGING
        self.staging.mkdir(exist_ok=True)
        _remove_stale(self.staging)

    def _full(self, path: str) -> Path:
        # A name the filesystem cannot hold is the client's mistake (400), whichever call meets it.
        if path and (max(len(p.encode()) for p in path.split("/")) > self.name_max
                     or len(str(self.root).encode()) + len(path.encode()) + 1 >= self.path_max):
            raise MlflowError.invalid(f"Invalid path: a name in '{path[:200]}' is too long.")
        if path.split("/", 1)[0] == STAGING:
            raise MlflowError.invalid("Invalid path")
        full = (self.root / path).resolve() if path else self.root
        if full != self.root and self.root not in full.parents:
            raise MlflowError.invalid("Invalid path")
        return full

    async def write(self, path: str, chunks: AsyncIterator[bytes]) -> int:
        if not path:
            raise MlflowError.invalid("Invalid path")
        target = self._full(path)
        if await anyio.to_thread.run_sync(target.is_dir):  # fail early; _place checks again
            raise _directory(path)
        tmp = self.staging / f"{uuid.uuid4().hex}.part"
        size = 0
        try:
            async with await anyio.open_file(tmp, "wb") as f:
                async for chunk in chunks:
                    if chunk:
                        size += len(chunk)
                        await f.write(chunk)
                await f.flush()
                await anyio.to_thread.run_sync(os.fsync, f.wrapped.fileno())
            await anyio.to_thread.run_sync(_place, tmp, target, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return size

    async def open(self, path: str) -> ArtifactStream:
        full = self._full(path)
        try:
            f = await anyio.open_file(full, "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise MlflowError.not_found(f"Artifact '{path}' does not exist.") from None
        except IsADirectoryError:
            raise _directory(path) from None
        except OSError as exc:
            _raise_translated(exc, path)
        size = os.fstat(f.wrapped.fileno()).st_size
        if not full.is_file():  # opened something that is not a regular file (a FIFO, a device)
            await f.aclose()
            raise MlflowError.not_found(f"Artifact '{path}' does not exist.")
        return ArtifactStream(size, _chunks(f))

    async def size(self, path: str) -> int | None:
        full = self._full(path)

        def stat() -> int | None:
            return full.stat().st_size if full.is_file() else None

        return await anyio.to_thread.run_sync(stat)

    async def list(self, path: str) -> list[FileInfo]:
        full = self._full(path)

        def scan() -> list[FileInfo]:
            if not full.is_dir():
                return []
            out = []
            with os.scandir(full) as entries:
                for entry in entries:
                    if entry.name == STAGING and full == self.root:
                        continue
                    rel = f"{path}/{entry.name}" if path else entry.name
                    try:
                        if entry.is_dir():
                            out.append(FileInfo(rel, True))
                        else:
                            out.append(FileInfo(rel, False, entry.stat().st_size))
                    except FileNotFoundError:  # deleted while we listed
                        continue
            return sorted(out, key=lambda f: f.path)

        return await anyio.to_thread.run_sync(scan)

    async def delete(self, path: str) -> None:
        if not path:
            raise MlflowError.invalid("Refusing to delete the artifact root.")
        full = self._full(path)

        def remove() -> None:
            try:
                if full.is_dir() and not full.is_symlink():
                    shutil.rmtree(full)
                else:
                    full.unlink(missing_ok=True)
            except FileNotFoundError:  # a concurrent delete got there first: same outcome
                pass

        await anyio.to_thread.run_sync(remove)

    def _own_path(self, uri: str) -> str | None:
        local = uri[len("file://"):] if uri.startswith("file://") else uri
        if not local.startswith("/"):
            return None
        return relative_to_root(os.path.normpath(local), str(self.root))


async def _chunks(f) -> AsyncIterator[bytes]:
    try:
        while chunk := await f.read(CHUNK):
            yield chunk
    finally:
        await f.aclose()


def _place(tmp: Path, target: Path, path: str) -> None:
    """Make the target's folders and rename the staged file into place."""
    for attempt in range(3):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise MlflowError.invalid(
                f"Cannot write artifact '{path}': a parent of it is a file, not a directory.") from None
        except OSError as exc:
            _raise_translated(exc, path)
        try:
            os.replace(tmp, target)
            return
        except IsADirectoryError:
            raise _directory(path) from None
        except FileNotFoundError:
            if attempt == 2:  # a concurrent delete keeps removing the folder
                raise
        except OSError as exc:
            _raise_translated(exc, path)


def _remove_stale(staging: Path) -> None:
    cutoff = time.time() - _STALE_SECONDS
    for entry in staging.iterdir():
        try:
            if entry.stat().st_mtime < cutoff:
                entry.unlink()
        except OSError:
            pass


def _directory(path: str) -> MlflowError:
    return MlflowError.invalid(f"Artifact path refers to a directory, not a file: '{path}'")


def _pathconf(path: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(path, name)
    except (OSError, ValueError):
        return default


def _raise_translated(exc: OSError, path: str) -> None:
    """A name too long for the filesystem is the client's mistake; anything else is ours."""
    if exc.errno == errno.ENAMETOOLONG:
        raise MlflowError.invalid(f"Invalid path: a name in '{path[:200]}' is too long.") from None
    raise exc
