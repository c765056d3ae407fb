"""The one classification of Redis failures (`roomstream_kit.redis.redis_unavailable`): every
"try again" state is `unavailable`; a bad command or a script bug is not."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ConnectionError,
    DataError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)
from roomstream_kit.redis import RedisTryAgainError, redis_unavailable, reply_error


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionError("refused"),
        TimeoutError("timeout"),
        ConnectionResetError(),
        BusyLoadingError("Redis is loading the dataset in memory"),
        ReadOnlyError("You can't write against a read only replica."),
        TryAgainError("Multiple keys request during rehashing of slot"),
        ClusterDownError("The cluster is down"),
        ResponseError("BUSY Redis is busy running a script."),
        ResponseError("MASTERDOWN Link with MASTER is down"),
        ResponseError("MISCONF Redis is configured to save RDB snapshots"),
        ResponseError("NOREPLICAS Not enough good replicas to write."),
        ResponseError("UNBLOCKED force unblock from blocking operation"),
        ResponseError("Command # 2 (HGET a b) of pipeline caused error: BUSY Redis is busy"),
        reply_error("LOADING Redis is loading the dataset in memory"),
        reply_error("READONLY You can't write against a read only replica."),
    ],
)
def test_try_again_states_are_unavailable(exc: BaseException) -> None:
    assert redis_unavailable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        ResponseError("BUSYGROUP Consumer Group name already exists"),
        ResponseError("ERR Error running script: attempt to index a nil value"),
        NoScriptError("No matching script."),
        DataError("Invalid input"),
        reply_error("ERR unknown command 'FOO'"),
        ValueError("not redis"),
    ],
)
def test_bugs_are_not_unavailable(exc: BaseException) -> None:
    assert not redis_unavailable(exc)


def test_reply_error_of_a_try_again_reply_is_a_connection_error() -> None:
    exc = reply_error("LOADING Redis is loading the dataset in memory")
    assert isinstance(exc, RedisTryAgainError) and isinstance(exc, ConnectionError)
    assert type(reply_error("WRONGTYPE x")) is ResponseError
