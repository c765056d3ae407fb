"""docs/openapi/rooms.yaml documents exactly the routes the service serves."""

from __future__ import annotations

from pathlib import Path

import yaml
from roomstream_rooms.api import RoomsApi
from roomstream_rooms.publish import PublishApi
from roomstream_rooms.userevents import UserEventsApi
from roomstream_rooms.users import UserSessionsApi

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "rooms.yaml"


def test_openapi_matches_the_routes():
    doc = yaml.safe_load(DOC.read_text())
    api = RoomsApi.__new__(RoomsApi)  # routes() needs no dependencies
    users = UserSessionsApi.__new__(UserSessionsApi)
    publish = PublishApi.__new__(PublishApi)
    user_events = UserEventsApi.__new__(UserEventsApi)
    served = {
        (route.path, method.lower())
        for route in [*api.routes(), *users.routes(), *publish.routes(), *user_events.routes()]
        for method in (route.methods or set()) - {"HEAD"}
    }
    documented = {
        (path, method)
        for path, item in doc["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
        and path.startswith(("/rooms", "/users", "/messages"))
    }
    assert served == documented
