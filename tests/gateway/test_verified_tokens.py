"""The gateway's cache of verified tokens (`roomstream_gateway.verified`): a token verified once
is not verified again until it expires; an expired or bad token is refused as without the cache;
with a JWKS nothing is cached (a withdrawn key must stop its tokens). Revocation at connect with a
cached token: tests/gateway/test_tokens.py (`old` is verified, cached, revoked, then refused)."""

from __future__ import annotations

import asyncio

import pytest
from roomstream_gateway.settings import GatewaySettings
from roomstream_gateway.verified import VerifiedTokens
from roomstream_kit.auth import AuthError, TokenVerifier, issue_token

from tests.conftest import JWT_SECRET


def _verified() -> VerifiedTokens:
    return VerifiedTokens(TokenVerifier(GatewaySettings(jwt_secret=JWT_SECRET)), size=2)


async def test_a_token_is_verified_once_until_it_expires() -> None:
    v = _verified()
    token = issue_token(JWT_SECRET, "ann", ttl_s=1.0)
    first = await v.averify(token)
    assert (await v.averify(token)) == first and v.hits == 1
    await asyncio.sleep(1.1)
    with pytest.raises(AuthError, match="expired"):
        await v.averify(token)
    with pytest.raises(AuthError, match="expired"):  # dropped from the cache, refused again
        await v.averify(token)


async def test_bad_tokens_are_refused_and_the_cache_is_bounded() -> None:
    v = _verified()
    good = [issue_token(JWT_SECRET, f"u{i}", ttl_s=60) for i in range(3)]
    for t in good:
        await v.averify(t)
    assert len(v._claims) == 2 and good[0] not in v._claims  # the oldest went first
    with pytest.raises(AuthError):
        await v.averify(good[1][:-2] + "xx")  # a forged signature is never a hit
    with pytest.raises(AuthError):
        await v.averify(issue_token("another-secret-of-32-bytes-or-more!!", "u1", ttl_s=60))
    with pytest.raises(AuthError):
        await v.averify(None)


def test_nothing_is_cached_with_a_jwks() -> None:
    settings = GatewaySettings(jwt_secret=JWT_SECRET, jwks_url="http://127.0.0.1:9/jwks.json")
    assert VerifiedTokens(TokenVerifier(settings)).size == 0
