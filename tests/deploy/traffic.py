"""Chat traffic for the deployment tests: clients that send and record, and the checks.

Each `Chatter` is a real `roomstream_client.Client` that joined one room, records every event it
is given and sends numbered messages with client ids of its own. `check_exactly_once` is the
property every deployment test asserts: every client saw every sequenced event of the room after
its join exactly once, in seq order with no gap, including every acknowledged message, and no
message was appended twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from roomstream_client import Client, Event
from roomstream_contracts.frames import EventFrame

from tests.conftest import make_token, service_token

DEADLINE_S = 90.0


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], what: str, deadline_s: float = DEADLINE_S
) -> None:
    """Poll `condition` until it holds (generous deadline: the machine is shared)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def create_public_room(rooms_url: str, room: str) -> None:
    """Create `room` through the rooms API (service token)."""
    async with httpx.AsyncClient(timeout=10.0) as http:
        r = await http.post(
            f"{rooms_url}/rooms",
            json={"id": room, "name": room, "kind": "public"},
            headers={"Authorization": f"Bearer {service_token()}"},
        )
    assert r.status_code == 201, r.text


@dataclass
class Chatter:
    user: str
    urls: list[str]
    room: str
    token_for: Callable[[str], str] = make_token
    """Mints the user's token (a deployment with a secret of its own passes its minter)."""
    client: Client = field(init=False)
    joined_seq: int = 0
    events: list[Event] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)
    """client message id → acknowledged seq."""
    nodes: list[str] = field(default_factory=list)
    """The gateway node of each connection this client had (welcome.node), in order."""
    _reader: asyncio.Task[None] | None = None

    async def start(self) -> Chatter:
        self.client = Client(self.urls, self.token_for(self.user), on_event=self.events.append)
        welcome = await self.client.connect()
        self.nodes.append(welcome.node)
        joined = await self.client.join(self.room)
        self.joined_seq = joined.seq
        return self

    def note_node(self) -> None:
        """Record the current connection's gateway when it changed."""
        welcome = self.client.welcome
        if welcome is not None and (not self.nodes or self.nodes[-1] != welcome.node):
            self.nodes.append(welcome.node)

    @property
    def node(self) -> str:
        self.note_node()
        return self.nodes[-1]

    async def send(self, n: int) -> None:
        cid = f"{self.user}-{n}"
        ack = await self.client.send(self.room, f"{self.user} says {n}", id=cid)
        assert ack.seq is not None
        self.acked[cid] = ack.seq
        self.note_node()

    async def send_many(self, count: int, pause_s: float) -> None:
        """Send `count` new messages (numbered on from the ones sent before)."""
        start = len(self.acked)
        for n in range(start, start + count):
            await self.send(n)
            await asyncio.sleep(pause_s)

    def room_events(self) -> list[EventFrame]:
        """The sequenced events of the room, as delivered."""
        return [
            e
            for e in self.events
            if isinstance(e, EventFrame) and e.seq is not None and e.room == self.room
        ]

    def seqs(self) -> list[int]:
        return [e.seq for e in self.room_events() if e.seq is not None]

    def last_seq(self) -> int:
        seqs = self.seqs()
        return seqs[-1] if seqs else self.joined_seq

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()


def check_exactly_once(chatters: list[Chatter]) -> int:
    """Assert the deployment property; returns the room's last seq."""
    acked = {cid: seq for c in chatters for cid, seq in c.acked.items()}
    assert len(set(acked.values())) == len(acked), "two sends acknowledged with one seq"
    last = max(c.last_seq() for c in chatters)
    for c in chatters:
        seqs = c.seqs()
        assert seqs == list(range(c.joined_seq + 1, last + 1)), (
            f"{c.user} (nodes {c.nodes}): gap, duplicate or disorder: {seqs}"
        )
        by_cid: dict[str, int | None] = {}
        for e in c.room_events():
            if e.kind != "message":
                continue
            cid = str(e.data["client_id"])
            assert cid not in by_cid, f"message {cid} appended twice: {by_cid[cid]}, {e.seq}"
            by_cid[cid] = e.seq
        for cid, seq in acked.items():
            if seq > c.joined_seq:
                assert by_cid.get(cid) == seq, f"{c.user} missed acked {cid} (seq {seq})"
    return last
