"""Local paths and object storage (``s3://`` and any fsspec URL) behind one small interface.

Credentials and the endpoint come from the standard AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``) or from explicit ``storage_options``; ``anon``
reads public buckets. Nothing here logs a credential.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from typing import Any

import fsspec
import s3fs

from randommask.errors import UserError

# Ranged GETs against S3-compatible servers (rclone, MinIO) carry the whole object's checksum,
# which botocore would reject for a partial body; checksums stay on where the API requires them.
_S3_CONFIG = {
    "response_checksum_validation": "when_required",
    "request_checksum_calculation": "when_required",
    "connect_timeout": 10,
    "read_timeout": 60,
    "retries": {"max_attempts": 3, "mode": "standard"},
}


class MarkerlessS3FileSystem(s3fs.S3FileSystem):
    """Object stores have no directories, and some S3 servers (rclone) reject directory markers:
    creating a "directory" is a no-op and only objects are ever written. A module-level class, so
    that it pickles by reference (Ray ships it to the Train controller) and fsspec's instance cache
    reuses clients and connections."""

    async def _mkdir(self, path, create_parents=True, **kwargs):
        return None

    async def _makedirs(self, path, exist_ok=False):
        return None


def split_uri(uri: str) -> tuple[str, str]:
    """``("s3", "bucket/key")`` for a URL, ``("file", "/abs/path")`` for a local path."""
    uri = str(uri)
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        return scheme.lower(), (rest if scheme.lower() in ("s3", "s3a", "gs", "gcs") else uri)
    return "file", os.path.abspath(os.path.expanduser(uri))


def is_local(uri: str) -> bool:
    return split_uri(uri)[0] == "file"


def filesystem(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``uri`` and the path within it."""
    scheme, path = split_uri(uri)
    opts = dict(storage_options or {})
    if scheme in ("s3", "s3a"):
        endpoint = opts.pop("endpoint_url", None) or os.environ.get("AWS_ENDPOINT_URL")
        client_kwargs = dict(opts.pop("client_kwargs", {}))
        if endpoint:
            client_kwargs["endpoint_url"] = endpoint
        config_kwargs = {**_S3_CONFIG, **opts.pop("config_kwargs", {})}
        fs = MarkerlessS3FileSystem(client_kwargs=client_kwargs, config_kwargs=config_kwargs, **opts)
        return fs, path
    if scheme == "file":
        return fsspec.filesystem("file"), path
    return fsspec.filesystem(scheme, **opts), path


def join(uri: str, *parts: str) -> str:
    scheme, _ = split_uri(uri)
    if scheme == "file":
        return os.path.join(split_uri(uri)[1], *parts)
    return posixpath.join(uri.rstrip("/"), *parts)


def ray_storage(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[str, Any]:
    """Ray's ``storage_path`` and ``storage_filesystem`` for ``uri`` (Train and Tune runs), on the same
    fsspec filesystem as everything else, so the endpoint and credentials come from one place."""
    scheme, path = split_uri(uri)
    if scheme == "file":
        return path, None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, _ = filesystem(uri, storage_options)  # writes objects only: no directory markers
    return path.rstrip("/"), PyFileSystem(FSSpecHandler(fs))


def describe_error(exc: BaseException, where: str) -> str:
    """One line for a storage failure: what went wrong at ``where`` and what to do."""
    name = type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else name
    if isinstance(exc, FileNotFoundError):
        return f"{where}: no such file or object; check the path"
    if isinstance(exc, PermissionError) or "AccessDenied" in text or "InvalidAccessKeyId" in text or "Forbidden" in text:
        return (f"{where}: access denied ({text}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                "or the storage options")
    if "PartialCredentials" in name:
        return f"{where}: incomplete credentials ({text}); set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    if "EndpointConnectionError" in name or "Connect" in name or "Could not connect" in text or "NoCredentials" in name:
        if "NoCredentials" in name:
            return f"{where}: no credentials; set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or use anon for public data"
        return f"{where}: cannot reach the storage endpoint ({text}); check AWS_ENDPOINT_URL and the network"
    return f"{where}: {name}: {text}"


def read_bytes(uri: str, storage_options: dict | None = None, start: int | None = None, end: int | None = None) -> bytes:
    fs, path = filesystem(uri, storage_options)
    try:
        if start is None:
            return fs.cat_file(path)
        return fs.cat_file(path, start=start, end=end)
    except Exception as e:  # storage errors vary by backend; turn them into one line
        raise UserError(describe_error(e, uri)) from None


def exists(uri: str, storage_options: dict | None = None) -> bool:
    fs, path = filesystem(uri, storage_options)
    try:
        return fs.exists(path)
    except Exception as e:
        raise UserError(describe_error(e, uri)) from None


def write_bytes(uri: str, data: bytes, storage_options: dict | None = None) -> None:
    """Write an object whole: local files via a temporary file and an atomic rename, S3 objects by one
    PUT (atomic by the protocol). Readers never see a partial file."""
    scheme, path = split_uri(uri)
    if scheme == "file":
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would hide the file from other readers
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    fs, path = filesystem(uri, storage_options)
    try:
        fs.pipe_file(path, data)
    except Exception as e:
        raise UserError(describe_error(e, uri)) from None


def put_file(local_path: str, uri: str, storage_options: dict | None = None) -> None:
    """Upload (or atomically move, for a local destination) a finished local file."""
    scheme, path = split_uri(uri)
    if scheme == "file":
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        shutil.copyfile(local_path, tmp)
        os.replace(tmp, path)
        return
    fs, path = filesystem(uri, storage_options)
    try:
        fs.put_file(local_path, path)
    except Exception as e:
        raise UserError(describe_error(e, uri)) from None


def remove(uri: str, storage_options: dict | None = None, recursive: bool = False) -> None:
    fs, path = filesystem(uri, storage_options)
    try:
        if fs.exists(path):
            fs.rm(path, recursive=recursive)
    except FileNotFoundError:
        pass
