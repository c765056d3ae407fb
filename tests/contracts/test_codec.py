"""The contracts' pure parts: codec round trips, command parsing errors, shard function."""

from __future__ import annotations

import orjson
import pytest
from roomstream_contracts.codec import (
    client_frame_of,
    decode_envelope,
    encode_envelope,
    envelope_tail,
    error_frame,
    event_body,
    parse_command,
)
from roomstream_contracts.errors import ErrorCode, ProtocolError
from roomstream_contracts.events import Envelope, EventKind, MessageData
from roomstream_contracts.frames import (
    HISTORY_DEFAULT_LIMIT,
    EventFrame,
    HistoryCommand,
    JoinCommand,
    SendCommand,
)
from roomstream_contracts.streams import StreamKeys, shard_of


def message_envelope(**overrides: object) -> Envelope:
    fields: dict[str, object] = {
        "id": "0123456789abcdef0123456789abcdef",
        "kind": EventKind.MESSAGE,
        "room": "general",
        "user": "alice",
        "node": "gateway-1",
        "conn": "c1",
        "ts": 1_700_000_000_000,
        "seq": 7,
        "data": {"text": "héllo ✓", "client_id": "m-1"},
        "trace": {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
    }
    fields.update(overrides)
    return Envelope.model_validate(fields)


def test_envelope_round_trip() -> None:
    env = message_envelope()
    assert decode_envelope(encode_envelope(env)) == env
    assert isinstance(env.typed_data(), MessageData)


def test_envelope_tail_is_what_the_append_script_completes() -> None:
    env = message_envelope()
    stored = b'{"seq":7,' + envelope_tail(env)
    assert decode_envelope(stored) == env
    live = message_envelope(kind=EventKind.TYPING, seq=None, data={})
    assert decode_envelope(b"{" + envelope_tail(live)) == live


def test_event_body_and_client_frames() -> None:
    env = orjson.loads(encode_envelope(message_envelope()))
    frame = orjson.loads(client_frame_of(env) or b"")
    assert frame == event_body(env)
    parsed = EventFrame.model_validate(frame)
    assert (parsed.room, parsed.seq, parsed.kind, parsed.data["text"]) == (
        "general",
        7,
        "message",
        "héllo ✓",
    )
    assert "trace" not in frame and "node" not in frame  # internal fields stay internal
    typing = orjson.loads(encode_envelope(message_envelope(kind=EventKind.TYPING, seq=None)))
    assert orjson.loads(client_frame_of(typing) or b"") == {
        "type": "typing",
        "room": "general",
        "user": "alice",
    }
    online = orjson.loads(encode_envelope(message_envelope(kind=EventKind.ONLINE, seq=None)))
    assert "seq" not in orjson.loads(client_frame_of(online) or b"")
    connected = orjson.loads(encode_envelope(message_envelope(kind=EventKind.CONNECTED)))
    assert client_frame_of(connected) is None  # cluster events never reach clients


def test_error_frame_leaves_out_empty_fields() -> None:
    assert orjson.loads(error_frame(ErrorCode.NOT_FOUND, "no such room")) == {
        "type": "error",
        "code": "not_found",
        "message": "no such room",
    }
    assert orjson.loads(error_frame(ErrorCode.RATE_LIMITED, "slow down", "r1", 250)) == {
        "type": "error",
        "ref": "r1",
        "code": "rate_limited",
        "message": "slow down",
        "retry_after": 250,
    }


def test_valid_commands_parse() -> None:
    cmd = parse_command('{"type":"send","room":"general","text":"hi","id":"m1","ref":"r1"}')
    assert isinstance(cmd, SendCommand) and (cmd.room, cmd.id, cmd.ref) == ("general", "m1", "r1")
    join = parse_command(b'{"type":"join","room":"general","since":0,"extra":"ignored"}')
    assert isinstance(join, JoinCommand) and join.since == 0
    history = parse_command('{"type":"history","room":"general"}')
    assert isinstance(history, HistoryCommand) and history.limit == HISTORY_DEFAULT_LIMIT


@pytest.mark.parametrize(
    ("raw", "ref", "fragment"),
    [
        ('{"type":"send",', None, "malformed JSON"),
        ("[1, 2]", None, "JSON object"),
        ('{"type":"shout","ref":"r1"}', "r1", "unknown frame type"),
        ('{"ref":"r2"}', "r2", "unknown frame type"),
        ('{"type":"send","room":"general","text":"hi","ref":"r3"}', "r3", "id"),
        ('{"type":"join","room":"general","since":"5","ref":"r4"}', "r4", "since"),
        ('{"type":"join","room":"Not A Slug","ref":"r5"}', "r5", "room"),
        ('{"type":"history","room":"general","limit":1000,"ref":"r6"}', "r6", "limit"),
        ('{"type":"edit","room":"general","seq":0,"text":"x","ref":7}', None, "seq"),
    ],
)
def test_bad_commands_are_bad_request_with_their_ref(
    raw: str, ref: str | None, fragment: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_command(raw)
    assert caught.value.code == ErrorCode.BAD_REQUEST
    assert caught.value.ref == ref
    assert fragment in caught.value.message


def test_shard_function_is_stable() -> None:
    # CRC-32 values: the same in every process and language; changing them remaps every room.
    assert [shard_of(k, 8) for k in ("general", "lobby", "user:alice", "node:gateway-1")] == [
        2,
        7,
        6,
        3,
    ]
    assert shard_of("general", 1024) == 586
    assert all(0 <= shard_of(f"room-{i}", 8) < 8 for i in range(1000))
    assert len({shard_of(f"room-{i}", 8) for i in range(1000)}) == 8


def test_stream_keys_share_the_rooms_hash_tag() -> None:
    keys = StreamKeys(namespace="ns", shards=8)
    tag = "{2}"
    for key in (
        keys.log(keys.room_shard("general")),
        keys.seq(keys.room_shard("general")),
        keys.recent("general"),
        keys.dedupe("general", "alice", "m1"),
        keys.room("general"),
        keys.members("general"),
        keys.presence("general"),
    ):
        assert key.startswith("ns:") and tag in key
    assert keys.all_logs() == [f"ns:log:{{{i}}}" for i in range(8)]
