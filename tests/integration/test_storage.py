"""The storage layer rides out transient object-store faults and fails fast on permanent ones, on a
real S3-compatible server (its own rclone, stopped and restarted on the same port)."""

from __future__ import annotations

import threading
import time

import pytest

from randommask.common import storage
from randommask.errors import UserError
from randommask.tools.s3server import local_s3

KEY, SECRET = "storage-test-key", "storage-test-secret"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with local_s3(tmp_path_factory.mktemp("s3faults"), KEY, SECRET) as s:
        s.bucket("b")
        yield s


def test_reads_and_writes_wait_out_an_outage(server, monkeypatch):
    opts = server.options()
    storage.write_bytes("s3://b/x.bin", bytes(range(256)) * 64, opts)
    server.stop()
    restart = threading.Timer(6.0, server.start)
    restart.start()
    try:
        t0 = time.monotonic()
        # A ranged read, as the training stream makes, then a write, as checkpoints do.
        assert storage.read_bytes("s3://b/x.bin", opts, 256, 512) == bytes(range(256))
        assert time.monotonic() - t0 >= 5.0  # it really waited for the server
        fs, root = storage.filesystem("s3://b", opts)
        server.stop()
        threading.Timer(4.0, server.start).start()
        storage.write_bytes("s3://b/y.bin", b"after the outage", opts)
        assert storage.read_bytes("s3://b/y.bin", opts) == b"after the outage"
        parts = storage.cat_ranges(fs, ["b/x.bin", "b/y.bin"], [0, 0], [4, 5], "s3://b")
        assert parts == [bytes(range(4)), b"after"]
    finally:
        restart.join()


def test_ray_trains_object_writes_wait_out_an_outage(server, monkeypatch):
    """Ray Train's workers and controller write through ``open_output_stream`` (an s3fs S3File), a
    path of its own: each object goes up when the stream closes."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    path, pyfs = storage.ray_storage("s3://b/ray-run")
    server.stop()
    restart = threading.Timer(5.0, server.start)
    restart.start()
    try:
        t0 = time.monotonic()
        with pyfs.open_output_stream(f"{path}/checkpoint_manager_snapshot.json") as f:
            f.write(b'{"snapshot": 1}')
        assert time.monotonic() - t0 >= 4.0  # it waited for the server
        with pyfs.open_input_stream(f"{path}/checkpoint_manager_snapshot.json") as f:
            assert f.read() == b'{"snapshot": 1}'
    finally:
        restart.join()


def test_permanent_errors_fail_at_once_in_one_line(server):
    opts = server.options()
    fs, _ = storage.filesystem("s3://b", opts)
    t0 = time.monotonic()
    with pytest.raises(UserError, match="s3://b/missing.bin: no such file or object"):
        storage.read_bytes("s3://b/missing.bin", opts)
    # fsspec hands a failed range back as an exception object; it is raised, not joined as bytes.
    storage.write_bytes("s3://b/z.bin", b"0123456789", opts)
    with pytest.raises(UserError, match="s3://b: no such file or object") as err:
        storage.cat_ranges(fs, ["b/z.bin", "b/nope.bin"], [0, 0], [4, 4], "s3://b")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="access denied"):
        storage.read_bytes("s3://b/z.bin", server.options(secret="not-the-secret"))
    assert time.monotonic() - t0 < storage.RETRY_SECONDS / 4  # no retry window spent on any of them


def test_an_outage_longer_than_the_window_is_a_transient_error(server, monkeypatch):
    opts = server.options()
    storage.write_bytes("s3://b/w.bin", b"window", opts)
    server.stop()
    try:
        with storage.preflight(2.0):  # checks before work: seconds, one line
            with pytest.raises(UserError, match="cannot reach the storage endpoint"):
                storage.read_bytes("s3://b/w.bin", opts)
        monkeypatch.setenv("RANDOMMASK_STORAGE_RETRY_S", "2")
        fs, _ = storage.filesystem("s3://b", opts)
        with pytest.raises(storage.TransientStorageError, match="cannot reach the storage endpoint"):
            storage.cat_ranges(fs, ["b/w.bin"], [0], [3], "s3://b")  # Ray Data retries the read task on this
    finally:
        server.start()
