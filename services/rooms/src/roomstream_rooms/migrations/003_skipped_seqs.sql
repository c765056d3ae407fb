-- Sequenced events the rooms consumer group dead-lettered (it could never apply them): the
-- projection treats their seqs as applied without effect, so a room never waits on them.
CREATE TABLE IF NOT EXISTS room_skipped_seqs (
    room       text   NOT NULL,
    seq        bigint NOT NULL,
    event_id   text   NOT NULL,
    error      text   NOT NULL,
    skipped_at bigint NOT NULL,
    PRIMARY KEY (room, seq)
);
