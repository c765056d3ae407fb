"""Async Python client for roomstream.

```python
async with Client(["ws://127.0.0.1:8000/ws", "ws://127.0.0.1:8001/ws"], token) as client:
    await client.join("general")
    ack = await client.send("general", "hello")
    async for event in client.events():
        print(event.room, event.seq, event.kind, event.data)
```

Modules: `client` (the connection and commands), `sequencer` (exactly-once, in-order delivery per
room), `backoff` (reconnect delays), `errors`.
"""

from .backoff import Backoff
from .client import Ack, Client, Event, Joined, Stats, UserEvent, Welcome
from .errors import (
    ClientClosed,
    ClientError,
    CommandError,
    ConnectionClosedFatal,
    ConnectionLost,
)
from .sequencer import Sequencer

__all__ = [
    "Ack",
    "Backoff",
    "Client",
    "ClientClosed",
    "ClientError",
    "CommandError",
    "ConnectionClosedFatal",
    "ConnectionLost",
    "Event",
    "Joined",
    "Sequencer",
    "Stats",
    "UserEvent",
    "Welcome",
]
