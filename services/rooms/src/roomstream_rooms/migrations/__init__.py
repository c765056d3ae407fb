"""Numbered SQL migrations of the rooms service, applied at start by `roomstream_kit.postgres.migrate`."""
