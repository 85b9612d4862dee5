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
