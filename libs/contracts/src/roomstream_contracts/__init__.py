"""roomstream contracts: the single definition of the wire format shared by every service.

- `events`: the log envelope and the data of each event kind;
- `frames`: client commands and server frames of the WebSocket protocol;
- `streams`: stream key names, the room → shard function, the atomic append script;
- `codec`: JSON encoding of all of the above (orjson);
- `errors`: error codes and close codes; `tokens`: JWT claims; `ids`: identifier formats;
- `schema`: JSON Schema export.
"""

from .errors import CloseCode, ErrorCode, ProtocolError
from .events import DELIVERED_KINDS, SEQUENCED_KINDS, Envelope, EventKind
from .streams import StreamKeys, shard_of

__all__ = [
    "DELIVERED_KINDS",
    "SEQUENCED_KINDS",
    "CloseCode",
    "Envelope",
    "ErrorCode",
    "EventKind",
    "ProtocolError",
    "StreamKeys",
    "shard_of",
]
