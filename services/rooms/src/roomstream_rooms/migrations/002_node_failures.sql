-- When each node was declared failed: a `connected` entry of that node opened before the failure
-- but processed after the `node_failed` (another shard, reclaimed late) is stored closed at once.
CREATE TABLE node_failures (
    node      text PRIMARY KEY,
    failed_at bigint NOT NULL
);
