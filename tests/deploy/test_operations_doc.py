"""docs/operations.md is the configuration reference: it must name every environment variable of
every service's settings class (and the links it gives must exist)."""

from __future__ import annotations

import re
from pathlib import Path

from roomstream_kit.settings import CommonSettings

from tests.deploy.test_compose import env_names, settings_class

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "operations.md"


def test_every_environment_variable_is_documented() -> None:
    text = DOC.read_text()
    classes = [CommonSettings] + [
        settings_class(f"roomstream_{kind}")
        for kind in ("gateway", "rooms", "history", "monitor", "hooks")
    ]
    missing = sorted(
        f"{cls.__name__}: {name}"
        for cls in classes
        for name in env_names(cls)
        if f"`{name}`" not in text
    )
    assert not missing, f"docs/operations.md lacks {missing}"


def test_files_it_points_to_exist() -> None:
    text = DOC.read_text()
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (DOC.parent / target).exists(), f"broken link {target}"
    for path in re.findall(r"`((?:tests/deploy|deploy)/[\w./-]+\.(?:py|cfg|yaml|yml))", text):
        assert (REPO / path).exists(), f"{path} does not exist"
