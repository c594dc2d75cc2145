"""Artifacts in an S3-compatible bucket (AWS S3, MinIO, Ceph, moto, ...), through boto3.

``S3Repository("s3://bucket/prefix", endpoint_url=...)``. Credentials and region come from boto3's
usual chain (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, profiles,
instance roles). boto3 is synchronous, so every call runs in a worker thread.

An upload is spooled to a temporary file on disk as it arrives and then handed to boto3's transfer
manager, which sends it in parts (and retries a failed part) without reading it whole into memory;
a download streams the object's body in 1 MB chunks.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import AsyncIterator, Callable, TypeVar
from urllib.parse import urlparse

import anyio
import anyio.to_thread
import boto3
import boto3.exceptions
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from modelyard.artifacts import CHUNK, ArtifactRepository, ArtifactStream, FileInfo, join, relative_to_root
from modelyard.errors import MlflowError

__all__ = ["S3Repository"]

log = logging.getLogger("modelyard.artifacts")

T = TypeVar("T")

# Parts of 8 MB, four in flight: an upload holds at most ~32 MB of the file in memory at a time.
_TRANSFER = TransferConfig(multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024,
                           max_concurrency=4, use_threads=True)
_DELETE_BATCH = 1000  # the most keys DeleteObjects accepts
_MISSING = {"404", "NoSuchKey", "NotFound"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "ExpiredToken"}


class S3Repository(ArtifactRepository):
    """Files as objects under ``prefix`` in ``bucket``; directories are key prefixes."""

    def __init__(self, uri: str, endpoint_url: str | None = None, spool_dir: str | os.PathLike | None = None):
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an s3://bucket[/prefix] URI: {uri!r}")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.endpoint_url = endpoint_url or None
        self.spool_dir = Path(spool_dir) if spool_dir else None
        self._client = None
        self._client_lock = threading.Lock()

    @property
    def client(self):
        """The boto3 client, made on first use (creating one is slow; using one is thread-safe)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    config = Config(
                        max_pool_connections=32,
                        retries={"max_attempts": 5, "mode": "standard"},
                        # Servers other than AWS (MinIO, moto, Ceph) are reached by host and port,
                        # where virtual-hosted bucket names do not resolve.
                        s3={"addressing_style": "path"} if self.endpoint_url else None,
                    )
                    self._client = boto3.session.Session().client(
                        "s3", endpoint_url=self.endpoint_url, config=config)
        return self._client

    def _key(self, path: str) -> str:
        return join(self.prefix, path)

    async def _run(self, fn: Callable[..., T], *args, path: str = "") -> T:
        """Run a blocking boto3 call in a thread, translating S3's errors into MLflow's."""
        try:
            return await anyio.to_thread.run_sync(fn, *args)
        except botocore.exceptions.ClientError as exc:
            raise self._translate(exc, path) from None
        except botocore.exceptions.NoCredentialsError:
            log.warning("no AWS credentials for %s", self.uri)
            raise MlflowError(f"The server has no credentials for {self.uri}.", "INTERNAL_ERROR") from None
        except boto3.exceptions.S3UploadFailedError as exc:  # upload_file wraps the ClientError
            log.warning("upload to %s failed: %s", self.uri, exc)
            raise MlflowError(f"Uploading '{path}' to the artifact store failed: {exc}", "INTERNAL_ERROR") from None
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
            log.warning("S3 unreachable for %s: %s", self.uri, exc)
            raise MlflowError(f"The artifact store {self.uri} is unreachable; retry.",
                              "TEMPORARILY_UNAVAILABLE") from None

    def _translate(self, exc: botocore.exceptions.ClientError, path: str) -> MlflowError:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            return MlflowError.not_found(f"Artifact '{path}' does not exist.")
        if code == "NoSuchBucket":
            log.warning("bucket of %s does not exist", self.uri)
            return MlflowError(f"The bucket '{self.bucket}' does not exist.", "INTERNAL_ERROR")
        if code in _DENIED:
            log.warning("S3 refused access to %s: %s", self.uri, exc)
            return MlflowError(f"The artifact store refused access to {self.uri} ({code}); "
                               "check the server's credentials.", "INTERNAL_ERROR")
        if code in ("SlowDown", "ServiceUnavailable", "503", "RequestTimeout", "InternalError"):
            return MlflowError(f"The artifact store is busy ({code}); retry.", "TEMPORARILY_UNAVAILABLE")
        log.warning("S3 error on %s/%s: %s", self.uri, path, exc)
        return MlflowError(f"The artifact store failed: {code or 'unknown error'}.", "INTERNAL_ERROR")

    async def write(self, path: str, chunks: AsyncIterator[bytes]) -> int:
        if not path:
            raise MlflowError.invalid("Invalid path")
        key = self._key(path)
        spool = await anyio.to_thread.run_sync(self._spool_file)
        size = 0
        try:
            async with anyio.wrap_file(spool) as f:
                async for chunk in chunks:
                    if chunk:
                        size += len(chunk)
                        await f.write(chunk)
            # upload_file sends small files in one PUT and large ones in parts; S3 makes the
            # object visible only once it is complete, so readers never see half a file.
            await self._run(self.client.upload_file, spool.name, self.bucket, key, None, None, _TRANSFER,
                            path=path)
        finally:
            await anyio.to_thread.run_sync(_unlink, spool.name)
        return size

    def _spool_file(self):
        if self.spool_dir is not None:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
        return tempfile.NamedTemporaryFile(prefix="modelyard-upload-", dir=self.spool_dir, delete=False)

    async def open(self, path: str) -> ArtifactStream:
        if not path:
            raise MlflowError.not_found("Artifact '' does not exist.")
        response = await self._run(lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(path)),
                                   path=path)
        return ArtifactStream(int(response["ContentLength"]), self._chunks(response["Body"], path))

    async def _chunks(self, body, path: str) -> AsyncIterator[bytes]:
        try:
            while chunk := await self._run(body.read, CHUNK, path=path):
                yield chunk
        finally:
            await anyio.to_thread.run_sync(body.close)

    async def size(self, path: str) -> int | None:
        if not path:
            return None
        try:
            head = await self._run(lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(path)),
                                   path=path)
        except MlflowError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return int(head["ContentLength"])

    async def list(self, path: str) -> list[FileInfo]:
        key = self._key(path)
        prefix = key + "/" if key else ""

        def scan() -> list[FileInfo]:
            out = []
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    name = common["Prefix"][len(prefix):].rstrip("/")
                    if name:
                        out.append(FileInfo(join(path, name), True))
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(prefix):]
                    if name:  # skip the "dir/" marker objects some tools create
                        out.append(FileInfo(join(path, name), False, int(obj["Size"])))
            return sorted(out, key=lambda f: f.path)

        return await self._run(scan, path=path)

    async def delete(self, path: str) -> None:
        if not path:
            raise MlflowError.invalid("Refusing to delete the artifact root.")
        key = self._key(path)

        def remove() -> None:
            # The file of that name (deleting a missing key succeeds), then a directory's contents.
            self.client.delete_object(Bucket=self.bucket, Key=key)
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=key + "/")
            batch: list[dict] = []
            for page in pages:
                for obj in page.get("Contents", []):
                    batch.append({"Key": obj["Key"]})
                    if len(batch) == _DELETE_BATCH:
                        self._delete_batch(batch)
                        batch = []
            if batch:
                self._delete_batch(batch)

        await self._run(remove, path=path)

    def _delete_batch(self, batch: list[dict]) -> None:
        result = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        errors = [e for e in result.get("Errors", []) if e.get("Code") not in _MISSING]
        if errors:
            first = errors[0]
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": first.get("Code", ""), "Message": first.get("Message", "")}}, "DeleteObjects")

    async def close(self) -> None:
        if self._client is not None:
            await anyio.to_thread.run_sync(self._client.close)

    def _own_path(self, uri: str) -> str | None:
        return relative_to_root(uri, self.uri)


def _unlink(name: str) -> None:
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass
