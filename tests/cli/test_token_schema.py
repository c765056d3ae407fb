"""`roomstream token` and `roomstream schema`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from roomstream_contracts.frames import COMMAND_TYPES
from roomstream_kit.auth import AuthError, TokenVerifier
from roomstream_kit.settings import CommonSettings


def roomstream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roomstream_cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_token_verifies_with_the_development_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "ROOMSTREAM_JWT_SECRET"}
    out = roomstream("token", "alice", "--ttl", "120", env=env)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    monkeypatch.delenv("ROOMSTREAM_JWT_SECRET", raising=False)
    claims = TokenVerifier(CommonSettings()).verify(token)
    assert claims.sub == "alice" and not claims.is_service


def test_token_uses_the_configured_secret_and_role(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    env = {**os.environ, "ROOMSTREAM_JWT_SECRET": "another-secret-of-enough-length-123"}
    token = roomstream("token", "svc", "--role", "service", env=env).stdout.strip()
    monkeypatch.setenv("ROOMSTREAM_JWT_SECRET", "another-secret-of-enough-length-123")
    claims = TokenVerifier(CommonSettings()).verify(token)
    assert claims.sub == "svc" and claims.is_service
    monkeypatch.setenv("ROOMSTREAM_JWT_SECRET", "a-different-secret-of-enough-length")
    with pytest.raises(AuthError):
        TokenVerifier(CommonSettings()).verify(token)


def test_token_rejects_an_unknown_role() -> None:
    out = roomstream("token", "bob", "--role", "admin")
    assert out.returncode != 0
    assert "invalid choice" in out.stderr


def test_schema_writes_json_schemas_of_every_frame(tmp_path: Path) -> None:
    out = roomstream("schema", "--out", str(tmp_path / "schema"))
    assert out.returncode == 0, out.stderr
    files = sorted(p.name for p in (tmp_path / "schema").iterdir())
    assert files == ["client-frames.schema.json", "events.schema.json", "server-frames.schema.json"]
    client = json.loads((tmp_path / "schema" / "client-frames.schema.json").read_text())
    # A discriminated union: one sub-schema per client frame type.
    mapping = client["discriminator"]["mapping"]
    assert set(mapping) == set(COMMAND_TYPES)
    for ref in mapping.values():
        name = ref.rsplit("/", 1)[1]
        assert client["$defs"][name]["properties"]["type"]["const"] in COMMAND_TYPES
    server = json.loads((tmp_path / "schema" / "server-frames.schema.json").read_text())
    assert {
        "welcome",
        "event",
        "ack",
        "error",
        "joined",
        "history",
        "presence",
        "typing",
        "refresh",
        "pong",
        "user",
    } == set(server["discriminator"]["mapping"])
    events = json.loads((tmp_path / "schema" / "events.schema.json").read_text())
    assert "seq" in events["envelope"]["properties"]
    assert "message" in events["data"]


def test_checked_in_schemas_are_up_to_date(tmp_path: Path) -> None:
    """docs/schema is generated: it must match what `roomstream schema` writes now."""
    repo = Path(__file__).resolve().parents[2]
    roomstream("schema", "--out", str(tmp_path))
    generated = sorted(p.name for p in tmp_path.iterdir())
    committed_names = sorted(p.name for p in (repo / "docs" / "schema").iterdir())
    assert generated and generated == committed_names
    for path in tmp_path.iterdir():
        committed = repo / "docs" / "schema" / path.name
        assert committed.read_text() == path.read_text(), f"run `roomstream schema` ({path.name})"
