"""The contracts refuse text that Postgres or JSON consumers cannot take (U+0000, surrogates) in
every model that carries outside input: commands, event data, token claims, user ids."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from roomstream_contracts.codec import parse_command
from roomstream_contracts.errors import ErrorCode, ProtocolError
from roomstream_contracts.events import MessageData, MessageEditedData, RoomCreatedData
from roomstream_contracts.ids import check_storable, make_storable, user_id_problem
from roomstream_contracts.tokens import TokenClaims

SURROGATE = json.loads('"\\ud800"')


@pytest.mark.parametrize("value", ["", "ok", "émoji 🎉", "tab\tnew\nline", "\x01\x7f", "\ufffd"])
def test_ordinary_text_is_accepted(value: str) -> None:
    assert check_storable(value) == value
    assert make_storable(value) == value


@pytest.mark.parametrize("value", ["\x00", "a\x00", f"x{SURROGATE}", json.loads('"\\udfff"')])
def test_nul_and_surrogates_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="must not contain U\\+"):
        check_storable(value)
    assert user_id_problem(value) is not None
    assert "\x00" not in make_storable(value) and SURROGATE not in make_storable(value)


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "send", "room": "r", "text": "a\x00", "id": "1"},
        {"type": "send", "room": "r", "text": "a", "id": "1\x00"},
        {"type": "edit", "room": "r", "seq": 1, "text": "\x00"},
        {"type": "join", "room": "r\x00"},
    ],
)
def test_commands_with_nul_are_bad_requests(frame: dict[str, object]) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_command(json.dumps({**frame, "ref": "x"}))
    assert info.value.code == ErrorCode.BAD_REQUEST and info.value.ref == "x"


def test_event_data_and_token_claims_refuse_nul() -> None:
    for model, data in (
        (MessageData, {"text": "\x00", "client_id": "c"}),
        (MessageData, {"text": "t", "client_id": "\x00"}),
        (MessageEditedData, {"target_seq": 1, "text": "\x00"}),
        (RoomCreatedData, {"name": "\x00", "kind": "public", "owner": "o"}),
        (RoomCreatedData, {"name": "n", "kind": "public", "owner": "o\x00"}),
        (RoomCreatedData, {"name": "n", "kind": "public", "owner": "o", "members": ["\x00"]}),
        (TokenClaims, {"sub": "u\x00", "exp": 1}),
        (TokenClaims, {"sub": SURROGATE, "exp": 1}),
    ):
        with pytest.raises(ValidationError):
            model.model_validate(data)
    assert TokenClaims.model_validate({"sub": "ann", "exp": 1}).sub == "ann"
