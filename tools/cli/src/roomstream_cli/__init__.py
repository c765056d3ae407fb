"""The `roomstream` command line.

- `up` (package `up`): the whole system on this machine;
- `token` (`token_cmd`): a development JWT;
- `schema` (`schema_cmd`): the JSON Schemas into `docs/schema`;
- `bench` (package `bench`): the fan-out benchmark;
- `rooms`: creating rooms through the rooms API or straight into the log; `common`: shared bits.
"""
