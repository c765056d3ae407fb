-- Read markers: the last seq of a room each user has read (the `read` events of the users'
-- streams; max wins, so applying them in any order, or twice, gives the same row).
CREATE TABLE IF NOT EXISTS read_markers (
    user_id    text   NOT NULL,
    room       text   NOT NULL,
    seq        bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (user_id, room)
);
