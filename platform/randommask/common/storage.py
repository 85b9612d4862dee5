"""Local paths and object storage (``s3://`` and any fsspec URL) behind one small interface.

Credentials and the endpoint come from the standard AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``) or from explicit ``storage_options``; ``anon``
reads public buckets. Nothing here logs a credential.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import posixpath
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import fsspec
import fsspec.asyn
import s3fs

from randommask.errors import UserError

_log = logging.getLogger(__name__)

# Ranged GETs against S3-compatible servers (rclone, MinIO) carry the whole object's checksum,
# which botocore would reject for a partial body; checksums stay on where the API requires them.
_S3_CONFIG = {
    "response_checksum_validation": "when_required",
    "request_checksum_calculation": "when_required",
    "connect_timeout": 10,
    "read_timeout": 60,
    "retries": {"max_attempts": 3, "mode": "standard"},
}


# How long storage calls keep retrying a transient fault (endpoint down, connection reset, 5xx,
# throttling) before they give up: long enough to ride out an S3 restart or a network blip, short
# enough that a dead endpoint still fails the run within minutes. Override per process with
# RANDOMMASK_STORAGE_RETRY_S (0 turns the retries off).
RETRY_SECONDS = 180.0
# Checks before any work starts (a wrong endpoint or key) answer within seconds instead.
PREFLIGHT_SECONDS = 5.0
_window: contextvars.ContextVar[float | None] = contextvars.ContextVar("randommask_storage_retry_s", default=None)


class TransientStorageError(OSError):
    """A storage call failed transiently for longer than the retry window; retrying later may work."""


def is_transient(exc: BaseException) -> bool:
    """True for faults that retrying can cure: unreachable endpoint, dropped or timed-out
    connections, server errors (5xx) and throttling. Missing objects, denied access and bad
    credentials are permanent: they fail at once."""
    import errno

    if isinstance(exc, TransientStorageError):
        return True
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)):
        return False
    names = {c.__name__ for c in type(exc).__mro__}
    transient_names = {
        "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
        "HTTPClientError", "ResponseStreamingError", "IncompleteReadError", "ClientConnectionError",
        "ClientPayloadError", "ServerDisconnectedError", "ServerTimeoutError", "FSTimeoutError",
        "TimeoutError", "ConnectionError", "IncompleteRead",
    }
    if names & transient_names:
        return not ("NoCredentialsError" in names or "PartialCredentialsError" in names)
    if isinstance(exc, OSError) and exc.errno in (errno.EBUSY, getattr(errno, "EREMOTEIO", 121), errno.EAGAIN):
        return True  # s3fs's translation of 5xx, SlowDown and ServiceUnavailable
    cause = exc.__cause__
    status = (getattr(cause, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
    return isinstance(status, int) and (status >= 500 or status == 429)


def retry_seconds() -> float:
    return float(os.environ.get("RANDOMMASK_STORAGE_RETRY_S", RETRY_SECONDS))


@contextlib.contextmanager
def preflight(seconds: float = PREFLIGHT_SECONDS) -> Iterator[None]:
    """Filesystems made inside this block retry transient faults for ``seconds`` only: for the checks
    a command makes before it starts work, so a wrong endpoint fails in seconds, not minutes."""
    token = _window.set(seconds)
    try:
        yield
    finally:
        _window.reset(token)


def backoff(attempt: int, base: float = 0.5, cap: float = 15.0) -> float:
    """Exponential backoff, jittered between half and all of the doubled wait: retries from many
    workers spread out instead of arriving together when the endpoint comes back."""
    return random.uniform(0.5, 1.0) * min(cap, base * 2 ** attempt)


async def _retrying(call, what: str, window: float):
    """Await ``call()`` until it succeeds, fails permanently, or transient faults outlast ``window``."""
    import asyncio

    deadline = time.monotonic() + window
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as e:
            if not is_transient(e):
                raise
            delay = backoff(attempt)
            if time.monotonic() + delay > deadline:
                if isinstance(e, TransientStorageError):
                    raise
                raise TransientStorageError(f"{what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                                            f"(still failing after {window:.0f} s of retries)") from e
            attempt += 1
            _log.warning("storage: %s failed (%s); retry %d in %.1f s", what, type(e).__name__, attempt, delay)
            await asyncio.sleep(delay)


class MarkerlessS3FileSystem(s3fs.S3FileSystem):
    """The S3 filesystem every reader and writer here shares, Ray Train's controller included.

    - Object stores have no directories, and some S3 servers (rclone) reject directory markers:
      creating a "directory" is a no-op and only objects are ever written.
    - Every S3 call, and every object read, retries transient faults with jittered backoff for
      ``retry_seconds()`` (botocore alone gives up within seconds): an S3 outage shorter than that
      window stalls a run instead of killing it. Permanent errors fail at once.

    A module-level class, so that it pickles by reference (Ray ships it to the Train controller)
    and fsspec's instance cache reuses clients and connections."""

    def __init__(self, *args, retry_s: float | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.retry_s = retry_s  # None: retry_seconds() at each call

    def _window(self) -> float:
        return retry_seconds() if self.retry_s is None else self.retry_s

    async def _mkdir(self, path, create_parents=True, **kwargs):
        return None

    async def _makedirs(self, path, exist_ok=False):
        return None

    async def _call_s3(self, method, *akwarglist, **kwargs):
        parent = super()._call_s3
        return await _retrying(lambda: parent(method, *akwarglist, **kwargs), f"S3 {method}", self._window())

    # s3fs binds its sync ``call_s3`` to the base class's coroutine, and every S3File (each object
    # written through ``open(..., "wb")``: Ray Train's checkpoint uploads and its controller's
    # snapshot) calls that one, so without this rebinding those writes would not retry.
    call_s3 = fsspec.asyn.sync_wrapper(_call_s3)

    async def _cat_file(self, path, version_id=None, start=None, end=None, **kwargs):
        # The body of a GET can break after its headers arrived: retry the whole ranged read.
        parent = super()._cat_file
        return await _retrying(lambda: parent(path, version_id=version_id, start=start, end=end, **kwargs),
                               f"read {path}", self._window())


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
        fs = MarkerlessS3FileSystem(client_kwargs=client_kwargs, config_kwargs=config_kwargs, retry_s=_window.get(),
                                    **opts)
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


def cat_ranges(fs: fsspec.AbstractFileSystem, paths: list[str], starts: list[int], ends: list[int],
               where: str) -> list[bytes]:
    """Ranged reads of several objects at once, every part checked. fsspec returns a failed range as
    an exception object in the list; a part that still fails after the filesystem's own retries is
    raised here: a permanent fault as a one-line UserError, a transient one as TransientStorageError
    (the stream's read task retries it a few times)."""
    try:
        parts = fs.cat_ranges(paths, starts, ends, on_error="return")
    except Exception as e:
        parts = [e]
    for part in parts:
        if isinstance(part, BaseException):
            if is_transient(part):
                raise TransientStorageError(describe_error(part, where)) from None
            raise UserError(describe_error(part, where)) from None
    return parts


def exists(uri: str, storage_options: dict | None = None) -> bool:
    fs, path = filesystem(uri, storage_options)
    try:
        return fs.exists(path)
    except Exception as e:
        raise UserError(describe_error(e, uri)) from None


@contextlib.contextmanager
def atomic_local(path: str, directory: bool = False) -> Iterator[str]:
    """A temporary sibling of local ``path`` to fill (a file, or a directory with ``directory``); when
    the block ends it is renamed onto ``path``, and removed if the block fails. The one atomic write
    here: readers never see a partial file or directory."""
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    if directory:
        tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-")
    else:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-")
        os.close(fd)
    try:
        yield tmp
        # mkstemp's 0600 (and a copied temporary directory's 0700) would hide it from other readers
        os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
        if directory and os.path.isdir(path):
            shutil.rmtree(path)  # a directory cannot be renamed onto a non-empty one
        os.replace(tmp, path)
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_whole(uri: str, storage_options: dict | None, fill: Callable[[str], Any],
                 upload: Callable[[Any, str], Any]) -> None:
    """Locally: ``fill(tmp)`` writes a temporary sibling that is renamed into place (``atomic_local``);
    on object storage ``upload(fs, path)`` writes the object in one PUT (atomic by the protocol)."""
    scheme, path = split_uri(uri)
    if scheme == "file":
        with atomic_local(path) as tmp:
            fill(tmp)
        return
    fs, path = filesystem(uri, storage_options)
    try:
        upload(fs, path)
    except Exception as e:
        raise UserError(describe_error(e, uri)) from None


def write_bytes(uri: str, data: bytes, storage_options: dict | None = None) -> None:
    """Write an object whole; readers never see a partial file."""
    _write_whole(uri, storage_options, lambda tmp: Path(tmp).write_bytes(data), lambda fs, p: fs.pipe_file(p, data))


def put_file(local_path: str, uri: str, storage_options: dict | None = None) -> None:
    """Upload (or atomically copy, for a local destination) a finished local file."""
    _write_whole(uri, storage_options, lambda tmp: shutil.copyfile(local_path, tmp),
                 lambda fs, p: fs.put_file(local_path, p))


def put_dir(local_dir: str, uri: str, storage_options: dict | None = None) -> None:
    """Copy a finished local directory (flat) to ``uri``: renamed into place locally, object by object on S3."""
    scheme, path = split_uri(uri)
    if scheme == "file":
        with atomic_local(path, directory=True) as tmp:
            shutil.copytree(local_dir, tmp, dirs_exist_ok=True)
        return
    for name in sorted(os.listdir(local_dir)):
        put_file(os.path.join(local_dir, name), join(uri, name), storage_options)


def remove(uri: str, storage_options: dict | None = None, recursive: bool = False) -> None:
    fs, path = filesystem(uri, storage_options)
    try:
        if fs.exists(path):
            fs.rm(path, recursive=recursive)
    except FileNotFoundError:
        pass
