"""The `roomstream` command line.

- `up` (package `up`): the whole system on this machine;
- `token` (`token_cmd`): a development JWT;
- `schema` (`schema_cmd`): the JSON Schemas into `docs/schema`;
- `bench` (package `bench`): the fan-out benchmark, and `bench history` / `bench hooks`, the
  benchmarks of one service (`bench.services`: their command lines);
- `rooms`: creating rooms through the rooms API or straight into the log; `common`: shared bits.
"""
