-- Rooms, memberships and connections: the durable projection of the log.

CREATE TABLE rooms (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('public', 'private')),
    owner      text NOT NULL,
    created_at bigint NOT NULL,          -- ms since the epoch (the room_created event's ts)
    last_seq   bigint NOT NULL           -- last applied seq of the room: the idempotency mark
);

CREATE TABLE memberships (
    room      text NOT NULL REFERENCES rooms (id),
    user_id   text NOT NULL,
    since_seq bigint NOT NULL,           -- seq of the event that made the user a member
    PRIMARY KEY (room, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id, room);

-- One row per socket ever seen. closed_at is a tombstone: a `connected` entry reclaimed after its
-- `disconnected` (or after the node's `node_failed`) must not bring the connection back.
CREATE TABLE connections (
    conn      text PRIMARY KEY,
    user_id   text NOT NULL,
    node      text NOT NULL,
    opened_at bigint,
    closed_at bigint
);
CREATE INDEX connections_live_by_user ON connections (user_id) WHERE closed_at IS NULL;
CREATE INDEX connections_live_by_node ON connections (node) WHERE closed_at IS NULL;
