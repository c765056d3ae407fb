"""The publish hook: an application endpoint asked before a socket's `send` is appended.

When `ROOMSTREAM_PUBLISH_HOOK_URL` is set, every `send` (after the gateway's own checks: size,
rate limit) is POSTed to it as one signed JSON request (Standard Webhooks headers, the one
signing definition in `roomstream_kit.signing`), and its answer decides (docs/hooks.md,
"Publish hook"):

- `{"action": "allow"}` (or an empty 2xx body): the text is appended as sent;
- `{"action": "reject", "reason": "...", "code"?: "forbidden" | "bad_request" | "too_large"}`:
  nothing is appended, the client gets `error` with that code (default `forbidden`) and the
  reason as its message;
- `{"action": "replace", "text": "..."}`: the replacement is appended instead.

Anything else — no answer within `publish_hook_timeout_ms` (waiting for a free request slot
included), a connection error, a non-2xx status, an answer that is not one of the above — is a
hook failure: `publish_hook_failure=open` appends the text as sent, `closed` answers `unavailable`.

Idempotency: a retried send whose id was appended already (a hook-approved first attempt) gets
its original ack, whatever the hook answers this time: a refusal looks up the id first, and an
approval goes to the append script, which answers a known id with the original ack.

The calls share one pooled `httpx.AsyncClient`, at most `publish_hook_concurrency` at once per
gateway; a slow hook delays the sends waiting for it (and later commands of the same socket,
which are handled in order), never the event loop or other sockets' commands and deliveries.
"""

from __future__ import annotations

import hashlib
import logging
import time
from asyncio import Semaphore, timeout
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from roomstream_contracts.errors import ErrorCode, ProtocolError
from roomstream_contracts.frames import SendCommand
from roomstream_contracts.ids import make_storable, now_ms, unstorable_char
from roomstream_kit.eventlog import EventLog
from roomstream_kit.signing import sign_headers
from roomstream_kit.telemetry import meter, span_if_recorded, tracer

from .session import Session
from .settings import GatewaySettings

log = logging.getLogger(__name__)

REJECT_CODES = frozenset({ErrorCode.FORBIDDEN, ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE})
"""Error codes a hook may give a rejection (PROTOCOL.md codes that mean "not this message")."""
DEFAULT_REASON = "rejected by the publish hook"
MAX_REASON_CHARS = 500


@dataclass(frozen=True, slots=True)
class Allow:
    text: str
    """The text to append (the sent one, or the hook's replacement)."""
    replaced: bool = False


@dataclass(frozen=True, slots=True)
class Reject:
    code: ErrorCode
    reason: str


class HookFailure(Exception):
    """The hook gave no usable answer (timeout, connection, status, body)."""


def request_body(session: Session, cmd: SendCommand, node: str) -> bytes:
    """What the hook is asked: the send and who sent it."""
    return orjson.dumps(
        {
            "type": "publish",
            "room": cmd.room,
            "user": session.user,
            "id": cmd.id,
            "text": cmd.text,
            "conn": session.id,
            "node": node,
            "ts": now_ms(),
        }
    )


def message_id(user: str, client_id: str) -> str:
    """`webhook-id` of a request: the same for every ask about the same (user, client id), so the
    hook can tell a retried send from a new one."""
    digest = hashlib.sha256(f"{user}\n{client_id}".encode()).hexdigest()[:32]
    return f"msg_{digest}"


def parse_answer(status: int, body: bytes, text: str, max_chars: int) -> Allow | Reject:
    """The hook's verdict on a send of `text` from its HTTP answer; `HookFailure` when the answer
    is not a valid verdict. Pure."""
    if not 200 <= status < 300:
        raise HookFailure(f"answered {status}")
    if not body.strip():
        return Allow(text)
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HookFailure("answer is not JSON") from None
    if not isinstance(answer, dict):
        raise HookFailure("answer is not a JSON object")
    action = answer.get("action")
    if action == "allow":
        return Allow(text)
    if action == "reject":
        reason = answer.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            reason = DEFAULT_REASON
        raw_code = answer.get("code", ErrorCode.FORBIDDEN.value)
        code = ErrorCode(raw_code) if raw_code in REJECT_CODES else ErrorCode.FORBIDDEN
        return Reject(code, make_storable(reason[:MAX_REASON_CHARS]))
    if action == "replace":
        new = answer.get("text")
        if not isinstance(new, str):
            raise HookFailure("replace without a text")
        if len(new) > max_chars:
            raise HookFailure(f"replacement over {max_chars} characters")
        if unstorable_char(new) is not None:
            raise HookFailure("replacement holds U+0000 or a lone surrogate")
        return Allow(new, replaced=new != text)
    raise HookFailure(f"unknown action {str(action)[:40]!r}")


class PublishHook:
    """Asks the configured endpoint about each `send` (see the module docstring)."""

    def __init__(self, settings: GatewaySettings, node: str, eventlog: EventLog) -> None:
        self.url = settings.publish_hook_url
        self.secret = settings.publish_hook_secret
        self.timeout_s = settings.publish_hook_timeout_ms / 1000
        self.fail_open = settings.publish_hook_failure == "open"
        self.max_chars = settings.max_text_chars
        self.node = node
        self.log = eventlog
        n = settings.publish_hook_concurrency
        self.slots = Semaphore(n)
        self.client = httpx.AsyncClient(
            timeout=self.timeout_s,
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            follow_redirects=False,
        )
        self.tracer = tracer("roomstream.gateway")
        m = meter("roomstream.gateway")
        self.answers = m.create_counter(
            "roomstream_gateway_publish_hook_answers",
            description="Publish hook verdicts: allow, replace, reject, failed_open, failed_closed",
        )
        self.latency = m.create_histogram(
            "roomstream_gateway_publish_hook_seconds",
            unit="s",
            description="Time from asking the publish hook to its verdict (or failure)",
        )

    @classmethod
    def from_settings(
        cls, settings: GatewaySettings, node: str, eventlog: EventLog
    ) -> PublishHook | None:
        """The hook, or None when none is configured (the send path then skips it)."""
        return cls(settings, node, eventlog) if settings.publish_hook_url else None

    async def aclose(self) -> None:
        await self.client.aclose()

    async def review(self, session: Session, cmd: SendCommand) -> str:
        """The text to append for `cmd`; raises `ProtocolError` when the send is refused (the
        hook rejects it, or fails with `publish_hook_failure=closed`) — unless this id was
        appended already: then the append answers with the original ack."""
        start = time.perf_counter()
        with span_if_recorded(self.tracer, "gateway.publish_hook"):
            try:
                verdict = await self._ask(session, cmd)
                outcome = "reject" if isinstance(verdict, Reject) else "allow"
                if isinstance(verdict, Allow) and verdict.replaced:
                    outcome = "replace"
            except HookFailure as exc:
                outcome = "failed_open" if self.fail_open else "failed_closed"
                log.warning(
                    "publish hook failed (%s): %s",
                    "appending as sent" if self.fail_open else "refusing the send",
                    exc,
                    extra={"conn": session.id, "user": session.user},
                )
                verdict = (
                    Allow(cmd.text)
                    if self.fail_open
                    else Reject(ErrorCode.UNAVAILABLE, f"publish hook unavailable: {exc}")
                )
        self.latency.record(time.perf_counter() - start)
        self.answers.add(1, {"outcome": outcome})
        if isinstance(verdict, Allow):
            return verdict.text
        if await self.log.original(session.user, cmd.id) is not None:
            return cmd.text  # a retry of an appended send: the append answers the original ack
        raise ProtocolError(verdict.code, verdict.reason, cmd.ref)

    async def _ask(self, session: Session, cmd: SendCommand) -> Allow | Reject:
        body = request_body(session, cmd, self.node)
        headers: dict[str, Any] = {
            "content-type": "application/json",
            **sign_headers(self.secret, message_id(session.user, cmd.id), body, int(time.time())),
        }
        try:
            async with timeout(self.timeout_s):  # the wait for a slot counts too
                async with self.slots:
                    response = await self.client.post(self.url, content=body, headers=headers)
        except TimeoutError:
            raise HookFailure(f"no answer within {self.timeout_s * 1000:.0f} ms") from None
        except httpx.HTTPError as exc:
            raise HookFailure(f"{type(exc).__name__}: {exc}") from None
        return parse_answer(response.status_code, response.content, cmd.text, self.max_chars)
