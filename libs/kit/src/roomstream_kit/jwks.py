"""The token issuer's signing keys from its JWKS endpoint, with rotation and a bounded fetch rate.

PyJWT's `PyJWKClient` fetches and parses the set (its `urllib` call blocks, so it runs in a
thread); this class keeps the last good set itself and decides when to fetch again:

- a `kid` that is not in the cached set triggers a fetch (key rotation: the issuer published a
  new key and signs with it), but at most one fetch per `min_refresh_s`, so tokens with made-up
  `kid`s cannot make every connect hit the issuer;
- a set older than `max_age_s` is fetched again on its next use; when that fetch fails, the stale
  set keeps serving (an issuer outage must not log everyone out);
- concurrent lookups share one fetch (a lock, re-checked after waiting).

Only asymmetric signing keys are kept (RS256, ES256): an `oct` key in a public JWKS would let
anyone sign tokens.
"""

from __future__ import annotations

import asyncio
import logging
import time

import jwt
from jwt import PyJWK, PyJWKClient

log = logging.getLogger(__name__)

JWKS_ALGORITHMS = frozenset({"RS256", "ES256"})
"""Algorithms a JWKS key may sign with."""


class KeysUnavailable(Exception):
    """The JWKS could not be fetched and no set is cached: a dependency outage, not a bad token."""


class UnknownKey(Exception):
    """The token names a `kid` the (fresh enough) JWKS does not have."""


class JwksKeys:
    """Signing keys by `kid` from one JWKS endpoint."""

    def __init__(
        self,
        url: str,
        *,
        min_refresh_s: float = 10.0,
        max_age_s: float = 300.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.min_refresh_s = min_refresh_s
        self.max_age_s = max_age_s
        # Our own cache and rate bound below; PyJWKClient only fetches and parses.
        self._client = PyJWKClient(url, cache_jwk_set=False, timeout=timeout_s)
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempt_at = -float("inf")
        self._lock: asyncio.Lock | None = None
        self.fetches = 0
        """Fetch attempts so far (tests and logs)."""

    def cached(self, kid: str) -> PyJWK | None:
        """The key `kid` from the cached set, without any I/O."""
        return self._keys.get(kid)

    def _fresh(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at < self.max_age_s

    async def key(self, kid: str) -> PyJWK:
        """The signing key `kid`, fetching the set when it is unknown or the set is old.

        Raises `UnknownKey` when the set (after a fetch, if one was allowed) lacks it, and
        `KeysUnavailable` when there is no set at all."""
        key = self._keys.get(kid)
        if key is not None and self._fresh(time.monotonic()):
            return key
        await self._refresh()
        key = self._keys.get(kid)
        if key is not None:
            return key
        if self._fetched_at is None:
            raise KeysUnavailable(f"JWKS {self.url} could not be fetched")
        raise UnknownKey(f"no key {kid[:64]!r} in the JWKS")

    async def _refresh(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            now = time.monotonic()
            if now - self._attempt_at < self.min_refresh_s:
                return  # fetched (or tried) a moment ago, maybe by the lookup we waited for
            self._attempt_at = now
            self.fetches += 1
            try:
                jwk_set = await asyncio.to_thread(self._client.get_jwk_set, True)
            except (jwt.PyJWTError, OSError, ValueError) as exc:
                log.warning("JWKS fetch failed (%s); keeping %d cached keys", exc, len(self._keys))
                return
            keys: dict[str, PyJWK] = {}
            for k in jwk_set.keys:
                usable = k.public_key_use in ("sig", None) and k.algorithm_name in JWKS_ALGORITHMS
                if k.key_id and usable:
                    keys[k.key_id] = k
            self._keys = keys
            self._fetched_at = time.monotonic()
            log.info("JWKS fetched", extra={"keys": sorted(keys)})
