"""Which object-storage faults the storage layer retries (the faults on a real S3 server are in
tests/integration/test_storage.py)."""

import errno

from randommask.common import storage


def test_which_faults_are_transient():
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError, ReadTimeoutError

    assert storage.is_transient(EndpointConnectionError(endpoint_url="http://x"))
    assert storage.is_transient(ReadTimeoutError(endpoint_url="http://x"))
    assert storage.is_transient(OSError(errno.EBUSY, "SlowDown"))
    assert storage.is_transient(ConnectionResetError())
    assert not storage.is_transient(NoCredentialsError())
    assert not storage.is_transient(FileNotFoundError("b/missing"))
    assert not storage.is_transient(PermissionError("AccessDenied"))
    assert not storage.is_transient(ValueError("bad range"))


def test_an_unwritable_node_cache_is_warned_about_once_and_the_work_goes_on(tmp_path, monkeypatch, capsys):
    from randommask.common import cache

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RANDOMMASK_CACHE", str(blocker))  # mkdir under a file fails, even as root
    monkeypatch.setattr(cache, "_WARNED", set())
    cache.write_json("floors", "k1", {"x": 1})
    cache.write_json("floors", "k2", {"x": 2})
    err = capsys.readouterr().err
    assert err.count("not writable") == 1 and "set RANDOMMASK_CACHE to a writable folder" in err
    assert cache.read_json("floors", "k1") is None
