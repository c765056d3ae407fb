"""docs/openapi/hooks.yaml documents exactly the routes the service serves, and its kinds are the
kinds the service accepts."""

from __future__ import annotations

from pathlib import Path

import yaml
from roomstream_hooks.api import HooksApi
from roomstream_hooks.model import HOOK_KINDS

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "hooks.yaml"


def test_openapi_matches_the_routes() -> None:
    doc = yaml.safe_load(DOC.read_text())
    api = HooksApi.__new__(HooksApi)  # routes() needs no dependencies
    served = {
        (route.path, method.lower())
        for route in api.routes()
        for method in (route.methods or set()) - {"HEAD"}
    }
    documented = {
        (path, method)
        for path, item in doc["paths"].items()
        for method in item
        if method in {"get", "post", "put", "delete"} and path.startswith("/endpoints")
    }
    assert served == documented
    assert doc["components"]["schemas"]["Kind"]["enum"] == list(HOOK_KINDS)
