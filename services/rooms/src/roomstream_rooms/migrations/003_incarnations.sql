-- Node incarnations (process lives of one node id): a connection records the incarnation that
-- opened it; `node_incarnations.retired_upto` is the highest incarnation of the node known dead
-- (a newer one started, or the monitor declared it failed). It only grows; every connection of an
-- incarnation at or below it is closed, also one whose `connected` is processed later.
ALTER TABLE connections ADD COLUMN incarnation bigint;
CREATE TABLE node_incarnations (
    node         text PRIMARY KEY,
    retired_upto bigint NOT NULL
);
