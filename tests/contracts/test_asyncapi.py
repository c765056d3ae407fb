"""docs/asyncapi.yaml is the document generated from roomstream_contracts (regenerate with
`roomstream schema`); every reference in it resolves; it changes when an event model changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import create_model
from roomstream_contracts import asyncapi, events

DOC = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return out + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_document_is_current() -> None:
    assert DOC.read_bytes() == asyncapi.render(), "run `roomstream schema` and commit the result"


def test_every_reference_resolves_and_every_kind_is_described() -> None:
    doc = yaml.safe_load(DOC.read_text())
    for ref in _refs(doc):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
    assert set(doc["components"]["messages"]) == {k.value for k in events.EventKind}


def test_a_changed_event_model_changes_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    before = asyncapi.render()
    changed = create_model("MessageData", __base__=events.MessageData, mentions=(list[str], []))
    monkeypatch.setitem(events.DATA_MODELS, events.EventKind.MESSAGE, changed)
    assert asyncapi.render() != before
