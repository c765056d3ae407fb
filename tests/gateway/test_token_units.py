"""Pure parts of the token lifecycle: the deadline heap, NumericDate claims, revocation, the
secret rule."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from roomstream_contracts.tokens import DEV_JWT_SECRET, TokenClaims, secret_problem
from roomstream_gateway.expiry import Deadlines


def test_deadlines_pop_in_time_order_and_a_reset_replaces_old_entries() -> None:
    d: Deadlines[str] = Deadlines()
    d.set("a", [(10.0, "expire"), (5.0, "hint")])
    d.set("b", [(7.0, "expire")])
    assert d.next_at() == 5.0
    assert d.due(6.0) == [("a", "hint")]
    d.set("a", [(20.0, "expire")])  # a refresh: the old expire at 10 no longer counts
    assert d.due(15.0) == [("b", "expire")]
    assert d.next_at() == 20.0 and len(d) == 1
    d.discard("a")
    assert d.next_at() is None and d.due(1e9) == [] and len(d) == 0


def test_deadlines_compact_stale_entries() -> None:
    d: Deadlines[int] = Deadlines()
    for round_ in range(10):
        for key in range(200):
            d.set(key, [(1000.0 + round_, "expire"), (900.0 + round_, "hint")])
    assert len(d._heap) < 4 * 400 + 400  # rebuilt, not 4000 entries
    assert sorted(d.due(2000.0)) == sorted([(k, w) for k in range(200) for w in ("hint", "expire")])


@pytest.mark.parametrize("value", [1_767_225_600, 1_767_225_600.25])
def test_numeric_dates_accept_integers_and_floats(value: float) -> None:
    claims = TokenClaims.model_validate({"sub": "a", "exp": value, "iat": value, "nbf": value})
    assert claims.exp == value


@pytest.mark.parametrize("value", ["1767225600", True, None, float("inf"), float("nan"), -1, 1e300])
def test_numeric_dates_refuse_strings_booleans_and_the_absurd(value: object) -> None:
    with pytest.raises(ValidationError):
        TokenClaims.model_validate({"sub": "a", "exp": value})


def test_revocation_covers_older_and_iat_less_tokens() -> None:
    old = TokenClaims(sub="a", exp=2e9, iat=100.0)
    new = TokenClaims(sub="a", exp=2e9, iat=200.0)
    no_iat = TokenClaims(sub="a", exp=2e9)
    assert old.revoked_by(150.0) and not new.revoked_by(150.0) and no_iat.revoked_by(150.0)
    assert not old.revoked_by(None) and not no_iat.revoked_by(None)


def test_secret_rule() -> None:
    assert "development secret" in (secret_problem(DEV_JWT_SECRET, "HS256") or "")
    assert "16 bytes" in (secret_problem("x" * 16, "HS256") or "")
    assert secret_problem("x" * 32, "HS256") is None
    assert secret_problem("x" * 32, "HS512") is not None  # RFC 7518: 64 bytes for HS512
