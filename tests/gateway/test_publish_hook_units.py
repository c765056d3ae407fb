"""The publish hook's pure parts: reading a verdict from the hook's answer (every malformed answer
is a hook failure, never an exception of another kind or an unstorable text), the request id,
and the settings that refuse an incomplete configuration."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError
from roomstream_contracts.errors import ErrorCode
from roomstream_gateway.publish_hook import (
    DEFAULT_REASON,
    MAX_REASON_CHARS,
    Allow,
    HookFailure,
    Reject,
    message_id,
    parse_answer,
)
from roomstream_gateway.settings import GatewaySettings

from tests.hooks.receiver import SECRET_A


def answer(body: object, status: int = 200) -> Allow | Reject:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_answer(status, raw, "sent", 20)


def test_verdicts() -> None:
    assert answer({"action": "allow"}) == Allow("sent")
    assert answer(b"", 204) == Allow("sent")
    assert answer({"action": "replace", "text": "new"}) == Allow("new", replaced=True)
    assert answer({"action": "replace", "text": "sent"}) == Allow("sent", replaced=False)
    assert answer({"action": "replace", "text": ""}) == Allow("", replaced=True)
    assert answer({"action": "reject", "reason": "no"}) == Reject(ErrorCode.FORBIDDEN, "no")
    assert answer({"action": "reject", "reason": "x", "code": "too_large"}) == Reject(
        ErrorCode.TOO_LARGE, "x"
    )


def test_a_rejection_is_always_a_client_error_with_a_storable_reason() -> None:
    # Codes outside the rejection codes (a hook cannot make the gateway say `internal`).
    for code in ("internal", "unavailable", "nonsense", 7, None):
        assert answer({"action": "reject", "reason": "r", "code": code}).code == "forbidden"
    for reason in (None, "", "   ", 12, ["x"]):
        assert answer({"action": "reject", "reason": reason}) == Reject(
            ErrorCode.FORBIDDEN, DEFAULT_REASON
        )
    # U+0000 gets through the JSON parser (a lone surrogate does not: not JSON, below).
    bad = answer(b'{"action": "reject", "reason": "a\\u0000b' + b"z" * 1000 + b'"}')
    assert isinstance(bad, Reject)
    assert "\x00" not in bad.reason and "\ud800" not in bad.reason
    assert len(bad.reason) <= MAX_REASON_CHARS + 2
    orjson.dumps(bad.reason)  # encodable in an error frame


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b'{"action": "allow"}'),
        (302, b""),
        (401, b""),
        (200, b"not json"),
        (200, b"[1, 2]"),
        (200, b'"allow"'),
        (200, b'{"action": "maybe"}'),
        (200, b"{}"),
        (200, b'{"action": "replace"}'),
        (200, b'{"action": "replace", "text": 5}'),
        (200, b'{"action": "replace", "text": "' + b"x" * 21 + b'"}'),
        (200, b'{"action": "replace", "text": "a\\u0000b"}'),
        (200, b'{"action": "replace", "text": "a\\ud800b"}'),
        (200, b'{"action": "reject", "reason": "a\\udc00b"}'),
    ],
)
def test_every_other_answer_is_a_hook_failure(status: int, body: bytes) -> None:
    with pytest.raises(HookFailure):
        parse_answer(status, body, "sent", 20)


def test_the_request_id_names_the_send_not_the_attempt() -> None:
    assert message_id("ann", "m1") == message_id("ann", "m1")
    assert message_id("ann", "m1") != message_id("ann", "m2") != message_id("ben", "m1")
    assert message_id("ann", "m1").startswith("msg_") and len(message_id("ann", "m1")) == 36


def test_settings_refuse_an_incomplete_hook() -> None:
    assert GatewaySettings().publish_hook_url == ""
    ok = GatewaySettings(publish_hook_url="http://127.0.0.1:1/h", publish_hook_secret=SECRET_A)
    assert ok.publish_hook_failure == "closed"
    for url, secret in (
        ("http://127.0.0.1:1/h", ""),
        ("http://127.0.0.1:1/h", "not-a-secret"),
        ("ftp://127.0.0.1/h", SECRET_A),
    ):
        with pytest.raises(ValidationError):
            GatewaySettings(publish_hook_url=url, publish_hook_secret=secret)
    with pytest.raises(ValidationError):
        GatewaySettings(publish_hook_failure="maybe")
