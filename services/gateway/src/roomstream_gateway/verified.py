"""Verified tokens remembered until they expire: a reconnecting client presents the same token
again, and its signature need not be checked twice (issue 12: connect cost).

Only with a static key (HS* secret or a PEM public key): with a JWKS a key may be withdrawn, and a
token it signed must stop working then. Revocation is not affected: the gateway reads the user's
revocation cutoff at every connect whatever this cache says (`TokenLifecycle.revoked`), and the
time claims (`exp`, `nbf`) are checked again on every hit.
"""

from __future__ import annotations

import time

from roomstream_contracts.tokens import TokenClaims
from roomstream_kit.auth import TokenVerifier

DEFAULT_SIZE = 50_000
"""Tokens remembered at most (the oldest go first); ~1 KB each."""


class VerifiedTokens:
    """`averify` of a `TokenVerifier`, with the claims of tokens already verified kept by token."""

    def __init__(self, verifier: TokenVerifier, size: int = DEFAULT_SIZE) -> None:
        self.verifier = verifier
        self.size = size if verifier.jwks is None else 0
        self._claims: dict[str, TokenClaims] = {}
        self.hits = 0

    async def averify(self, token: str | None) -> TokenClaims:
        """The token's claims; raises `AuthError` / `KeysUnavailable` as the verifier does."""
        if token and self.size:
            claims = self._claims.get(token)
            if claims is not None:
                now = time.time()
                if claims.exp > now and (claims.nbf is None or claims.nbf <= now):
                    self.hits += 1
                    return claims
                del self._claims[token]
        claims = await self.verifier.averify(token)
        if token and self.size:
            if len(self._claims) >= self.size:
                del self._claims[next(iter(self._claims))]
            self._claims[token] = claims
        return claims
