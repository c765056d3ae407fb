"""Pure parts of the webhooks service: signatures (the Standard Webhooks spec's published
example), endpoint validation, the env list, batches and the backoff."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError
from roomstream_contracts.events import Envelope, EventKind
from roomstream_hooks.model import (
    EndpointSpec,
    backoff_s,
    batch_body,
    batch_id,
    event_json,
    matches,
    parse_env_endpoints,
)
from roomstream_kit.signing import new_secret, secret_problem, sign_headers
from standardwebhooks import Webhook

# The example of the Standard Webhooks specification (and of its reference libraries' tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_spec_example() -> None:
    headers = sign_headers(SPEC_SECRET, SPEC_ID, SPEC_BODY, SPEC_TS)
    assert headers == {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TS),
        "webhook-signature": SPEC_SIGNATURE,
    }


def test_signature_verifies_and_tampering_does_not() -> None:
    import time

    secret = new_secret()
    assert secret_problem(secret) is None
    body = batch_body(['{"id":"e1"}'])
    headers = sign_headers(secret, "msg_x", body, int(time.time()))
    Webhook(secret).verify(body, headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(secret).verify(body + b" ", headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(new_secret()).verify(body, headers)


@pytest.mark.parametrize(
    "secret", ["", "whsec_", "abc", "whsec_!!!!", "whsec_c2hvcnQ=", "whsec_" + "QUFB" * 40]
)
def test_bad_secrets(secret: str) -> None:
    assert secret_problem(secret) is not None


def test_endpoint_spec() -> None:
    spec = EndpointSpec(url="https://x.example/h", kinds=["online", "message", "message"])
    assert spec.kinds == ["message", "online"] and spec.rooms is None
    for bad in (
        {"url": "http://h/\x00", "kinds": ["message"]},
        {"url": "http://h/" + "a" * 10_000, "kinds": ["message"]},
        {"url": "javascript:alert(1)", "kinds": ["message"]},
        {"url": "http://h/", "kinds": ["typing"]},
        {"url": "http://h/", "kinds": ["message"], "rooms": ["a" * 10_000]},
        {"url": "http://h/", "kinds": ["message"], "id": "x" * 65},
    ):
        with pytest.raises(ValidationError):
            EndpointSpec.model_validate(bad)


def test_env_endpoints() -> None:
    assert parse_env_endpoints("") == []
    ok = f'[{{"id": "a", "url": "http://h/", "secret": "{SPEC_SECRET}", "kinds": ["message"]}}]'
    assert parse_env_endpoints(ok)[0].id == "a"
    with pytest.raises(ValueError, match="id and a secret"):
        parse_env_endpoints('[{"url": "http://h/", "kinds": ["message"]}]')
    with pytest.raises(ValueError, match="unique"):
        parse_env_endpoints(f"[{ok[1:-1]}, {ok[1:-1]}]")
    with pytest.raises(ValueError):
        parse_env_endpoints("not json")


def test_event_json_and_batches() -> None:
    env = Envelope(
        id="e1",
        kind=EventKind.MESSAGE,
        room="r",
        user="u",
        ts=5,
        seq=3,
        data={"text": "hi", "client_id": "c"},
        trace={"traceparent": "x"},
    )
    import orjson

    assert orjson.loads(event_json(env)) == {
        "id": "e1",
        "kind": "message",
        "room": "r",
        "seq": 3,
        "user": "u",
        "ts": 5,
        "data": {"text": "hi", "client_id": "c"},
    }
    body = orjson.loads(batch_body([event_json(env).decode(), '{"id":"e2"}']))
    assert body["type"] == "events" and [e["id"] for e in body["events"]] == ["e1", "e2"]
    assert batch_id(["a", "b"]) == batch_id(["a", "b"]) != batch_id(["a", "c"])


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rnd = random.Random(1)
    for attempt in range(1, 40):
        d = backoff_s(attempt, 0.5, 60.0, rnd)
        assert 0.05 <= d <= min(60.0, 0.5 * 2 ** (attempt - 1))
    late = [backoff_s(10, 0.5, 60.0, rnd) for _ in range(200)]
    assert max(late) > 30 and min(late) < 30  # jittered over the whole range


def test_matches() -> None:
    assert matches(["message"], None, "message", None)
    assert not matches(["message"], None, "online", "r")
    assert matches(["message"], ["r"], "message", "r")
    assert not matches(["message"], ["r"], "message", "s")
    assert not matches(["connected"], ["r"], "connected", None)
