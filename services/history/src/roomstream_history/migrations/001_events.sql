-- Every sequenced room event, one row per (room, seq); edits and deletes are applied to the
-- message row they target (edited_text / edited / deleted) in the transaction that stores them.
CREATE TABLE history_events (
    room        text    NOT NULL,
    seq         bigint  NOT NULL,
    id          text    NOT NULL,
    kind        text    NOT NULL,
    user_id     text,
    ts          bigint  NOT NULL,
    data        jsonb   NOT NULL,
    target_seq  bigint,
    edited      boolean NOT NULL DEFAULT false,
    deleted     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (room, seq),
    CONSTRAINT history_events_id_key UNIQUE (id)
);

-- Edits and deletes by the message they target.
CREATE INDEX history_events_target ON history_events (room, target_seq)
    WHERE target_seq IS NOT NULL;
-- Retention by age.
CREATE INDEX history_events_ts ON history_events (ts);

-- Edits/deletes stored before their target message (possible when a reclaimed batch arrives
-- late); applied when the message arrives.
CREATE TABLE history_orphans (
    room        text   NOT NULL,
    target_seq  bigint NOT NULL,
    PRIMARY KEY (room, target_seq)
);

-- Rooms whose oldest events were deleted by history retention: events below `first_seq` exist
-- nowhere any more.
CREATE TABLE history_purged (
    room       text   PRIMARY KEY,
    first_seq  bigint NOT NULL
);
