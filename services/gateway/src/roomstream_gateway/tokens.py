"""Token lifecycle of the gateway's sockets: expiry, refresh, revocation, disconnect-user.

- Every authenticated socket has its token's `exp`. A `refresh` frame goes out `lead_s` before
  it; at `exp` the socket is closed with 4401 — unless the client sent `{"type": "auth",
  "token": ...}` with a valid token of the same user first, which replaces the socket's token
  (its `exp`, `iat`). A token of another user (`forbidden`), a revoked one (`forbidden`) or an
  invalid or expired one (`bad_request`) is refused and the socket keeps its old expiry.
- All deadlines of the gateway are in one heap (`expiry.Deadlines`) driven by one timer handle:
  an idle socket costs two heap entries and a small record, no task.
- Revocation: the user's cutoff (`StreamKeys.revoked`) is read at connect and on every refresh;
  a token with `iat` below it is refused. `tokens_revoked` and `user_kicked` events (sharded by
  user, in the log every gateway tails) close the user's local sockets: those holding a revoked
  token with 4401, all of them with 1008.
- After a control-channel drop (`controlgap`) both are read again for every local user: the
  cutoff, and the user's kick counter (`StreamKeys.kicked`, read at connect too): a socket that
  connected before a kick the drop swallowed is closed with 1008 all the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from roomstream_contracts.codec import error_frame, frame
from roomstream_contracts.errors import CloseCode, ErrorCode
from roomstream_contracts.events import EventKind
from roomstream_contracts.frames import AuthCommand
from roomstream_contracts.streams import FIELD_EVENT, FIELD_KIND, StreamKeys
from roomstream_contracts.tokens import TokenClaims, parse_cutoff
from roomstream_kit.auth import AuthError, KeysUnavailable, TokenVerifier
from roomstream_kit.redis import BatchRunner

from .expiry import Deadlines
from .metrics import GatewayMetrics
from .session import Session

log = logging.getLogger(__name__)

HINT = "hint"
EXPIRE = "expire"
_KICKED = EventKind.USER_KICKED.value.encode()
_REVOKED = EventKind.TOKENS_REVOKED.value.encode()
_CONTROL = frozenset({_KICKED, _REVOKED})
MAX_TIMER_S = 3600.0

Close = Callable[[Session, int, str], None]
Send = Callable[[Session, bytes], None]


class TokenState:
    """What the gateway keeps of a socket's current token."""

    __slots__ = ("exp", "iat", "kicks")

    def __init__(self, claims: TokenClaims, kicks: int | None = None) -> None:
        self.exp: float = claims.exp
        self.iat: float | None = claims.iat
        self.kicks = kicks
        """The user's kick counter when the socket connected (None: not read yet)."""


class TokenLifecycle:
    def __init__(
        self,
        verifier: TokenVerifier,
        batch: BatchRunner,
        keys: StreamKeys,
        metrics: GatewayMetrics,
        *,
        lead_s: float,
        close: Close,
        send: Send,
    ) -> None:
        self.verifier = verifier
        self.batch = batch
        """Redis reads (the revocation cutoffs) in one round trip."""
        self.keys = keys
        self.metrics = metrics
        self.lead_s = lead_s
        self.close = close
        self.send = send
        self.states: dict[Session, TokenState] = {}
        self.by_user: dict[str, set[Session]] = {}
        self.cutoff_seen: dict[str, float] = {}
        """user → latest revocation cutoff seen in the log, for users with local sockets (closes
        the window between a refresh's cutoff read and its token taking effect)."""
        self.deadlines: Deadlines[Session] = Deadlines()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    # -- sockets -----------------------------------------------------------------------------

    def track(self, session: Session, claims: TokenClaims) -> None:
        """Start tracking a socket that has just authenticated: its expiry closes it from now
        on, and revocation / kick events reach it (its refresh hint waits for `welcomed`)."""
        self.states[session] = TokenState(claims)
        self.by_user.setdefault(session.user, set()).add(session)
        self._schedule(session, hint=False)

    def welcomed(self, session: Session) -> None:
        """The socket got its `welcome`: from now on it may receive a `refresh` hint."""
        if session in self.states:
            self._schedule(session, hint=True)

    def forget(self, session: Session) -> None:
        """The socket is closed (or never got welcomed)."""
        self.states.pop(session, None)
        self.deadlines.discard(session)
        peers = self.by_user.get(session.user)
        if peers is not None:
            peers.discard(session)
            if not peers:
                del self.by_user[session.user]
                self.cutoff_seen.pop(session.user, None)

    async def revoked(self, claims: TokenClaims) -> bool:
        """Whether the user's tokens issued before the token's `iat` were revoked (a Redis
        read; its errors propagate)."""
        return claims.revoked_by(await self._cutoff(claims.sub))

    async def revoked_at_connect(self, session: Session, claims: TokenClaims) -> bool:
        """`revoked`, for a socket that was just tracked, and the user's kick counter read in
        the same round trip: the socket's baseline against which a kick that a control-channel
        drop swallowed is recognised later (`recheck_user`)."""
        user = claims.sub
        stored, kicks = await self.batch(
            [("GET", self.keys.revoked(user)), ("GET", self.keys.kicked(user))]
        )
        state = self.states.get(session)
        if state is not None:
            state.kicks = parse_kicks(kicks)
        return claims.revoked_by(self._merged_cutoff(user, stored))

    async def _cutoff(self, user: str) -> float | None:
        (stored,) = await self.batch([("GET", self.keys.revoked(user))])
        return self._merged_cutoff(user, stored)

    def _merged_cutoff(self, user: str, stored_raw: Any) -> float | None:
        """The later of the stored cutoff and the one last seen on the control channel."""
        stored = parse_cutoff(stored_raw)
        seen = self.cutoff_seen.get(user)
        if stored is None or (seen is not None and seen > stored):
            return seen
        return stored

    def recheck_user(self, user: str, revoked_raw: Any, kicked_raw: Any) -> None:
        """The user's revocation cutoff and kick counter, read again after a control-channel
        drop (`controlgap`): close the sockets the cutoff revokes (4401), then those that
        connected before a kick the drop swallowed (1008). A socket whose own counter read is
        still under way is left alone: it reads the current counter itself, and the control
        channel is subscribed again, so a later kick reaches it live."""
        sessions = self.by_user.get(user)
        if not sessions:
            return
        before = self._merged_cutoff(user, revoked_raw)
        if before is not None:
            self._revoke(list(sessions), before)
        kicks = parse_kicks(kicked_raw)
        hit = [
            s
            for s in self.by_user.get(user, ())
            if (st := self.states.get(s)) is not None and st.kicks is not None and st.kicks < kicks
        ]
        self._close_all(hit, CloseCode.POLICY_VIOLATION, "kicked")

    def _revoke(self, sessions: Iterable[Session], before: float) -> None:
        """Close (4401) the sockets whose token was issued before the cutoff."""
        hit = [
            s
            for s in sessions
            if (st := self.states.get(s)) is not None and (st.iat is None or st.iat < before)
        ]
        self._close_all(hit, CloseCode.NOT_AUTHENTICATED, "revoked")

    # -- refresh (an `auth` frame after authentication) --------------------------------------

    async def refresh(self, session: Session, cmd: AuthCommand) -> None:
        ref = cmd.ref
        try:
            claims = await self.verifier.averify(cmd.token)
        except AuthError as exc:
            self._refused(session, ErrorCode.BAD_REQUEST, f"token refused: {exc}"[:200], ref)
            return
        except KeysUnavailable as exc:
            self._refused(session, ErrorCode.UNAVAILABLE, str(exc)[:200], ref)
            return
        if claims.sub != session.user:
            self._refused(
                session, ErrorCode.FORBIDDEN, "the token is for another user", ref, "other_user"
            )
            return
        if await self.revoked(claims):  # Redis errors: `unavailable` (Commands.handle)
            self._refused(session, ErrorCode.FORBIDDEN, "token revoked", ref, "revoked")
            return
        if session not in self.states:  # closed meanwhile
            return
        self.states[session] = TokenState(claims, self.states[session].kicks)
        self.metrics.token_refreshes.add(1, {"result": "ok"})
        self.send(session, frame("ack", ref=ref, exp=claims.exp))
        self._schedule(session, hint=True)

    def _refused(
        self,
        session: Session,
        code: ErrorCode,
        message: str,
        ref: str | None,
        result: str | None = None,
    ) -> None:
        self.metrics.token_refreshes.add(1, {"result": result or code.value})
        self.metrics.errors.add(1, {"code": code.value})
        self.send(session, error_frame(code, message, ref))

    # -- control events from the log ---------------------------------------------------------

    def apply(self, entries: Iterable[dict[bytes, bytes]]) -> None:
        """The tail's hook: act on `user_kicked` / `tokens_revoked` entries of a batch."""
        for fields in entries:
            kind = fields.get(FIELD_KIND)
            if kind not in _CONTROL:
                continue
            try:
                env = orjson.loads(fields[FIELD_EVENT])
                user = env.get("user")
                sessions = self.by_user.get(user) if isinstance(user, str) else None
                if not sessions:
                    continue
                data = env.get("data") or {}
                if kind == _KICKED:
                    self._close_all(list(sessions), CloseCode.POLICY_VIOLATION, "kicked")
                else:
                    before = float(data["before"])
                    self.cutoff_seen[user] = max(before, self.cutoff_seen.get(user, before))
                    self._revoke(sessions, before)
            except Exception:  # one malformed entry must not cost the rest
                log.exception("tokens: skipped a control entry that could not be applied")

    def _close_all(self, sessions: list[Session], code: int, why: str) -> None:
        reason = "token revoked" if why == "revoked" else "disconnected by the service"
        for s in sessions:
            self.forget(s)
            if not s.closing:
                self.metrics.token_closes.add(1, {"reason": why})
                self.close(s, code, reason)

    # -- the one timer -----------------------------------------------------------------------

    def _schedule(self, session: Session, *, hint: bool) -> None:
        state = self.states[session]
        loop = asyncio.get_running_loop()
        now = loop.time()
        expire_at = now + (state.exp - time.time())
        entries = [(expire_at, EXPIRE)]
        if hint:
            entries.append((max(now, expire_at - self.lead_s), HINT))
        self.deadlines.set(session, entries)
        self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        at = self.deadlines.next_at()
        if at is None:
            return
        if self._timer is not None:
            if self._timer_at is not None and self._timer_at <= at:
                return  # fires earlier anyway, then re-arms
            self._timer.cancel()
        # Never further than an hour ahead (a far `exp` must not overflow the loop's timer):
        # an early wake-up finds nothing due and re-arms.
        at = min(at, loop.time() + MAX_TIMER_S)
        self._timer_at = at
        self._timer = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_at = None
        loop = asyncio.get_running_loop()
        # A timer may fire up to the clock's resolution early: round up so that it finds its due.
        for session, what in self.deadlines.due(loop.time() + 0.001):
            try:
                state = self.states.get(session)
                if state is None or session.closing:
                    continue
                if what == HINT:
                    left = max(0.0, state.exp - time.time())
                    self.send(session, frame("refresh", exp=state.exp, expires_in=round(left, 3)))
                else:
                    self.forget(session)
                    self.metrics.token_closes.add(1, {"reason": "expired"})
                    self.close(session, CloseCode.NOT_AUTHENTICATED, "token expired")
            except Exception:  # a timer callback must never stop the others
                log.exception("tokens: deadline failed", extra={"conn": session.id})
        self._arm(loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None


def parse_kicks(raw: Any) -> int:
    """A kick counter as stored (`StreamKeys.kicked`; absent or unreadable: 0)."""
    try:
        return int(raw) if raw is not None else 0
    except (TypeError, ValueError):
        return 0
