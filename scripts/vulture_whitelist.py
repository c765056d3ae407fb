"""Names the dead-code check (vulture, `scripts/test.sh`) must not report: called by a framework,
part of a public API that users call, or under work elsewhere. Each entry says why. Vulture only
needs the attribute names; the objects below are never used at run time.

Add a name here only when nothing in the tree can call it by name; code that is merely unused is
deleted instead.
"""

# ruff: noqa: B018
# mypy: ignore-errors
_ = object()

# -- framework-called ------------------------------------------------------------------------
_.model_config  # pydantic settings of every model
_._id, _._url, _._secret, _._kinds  # pydantic field validators (roomstream_hooks.model)
_._publish_hook_complete, _._pubsub_ping_sane  # pydantic model validators (gateway settings)
_.expires_in  # a pydantic field of RefreshFrame, serialized to clients
_.media_type  # starlette.responses.Response class attribute (kit JSONResponse)
_.exc_text  # logging.LogRecord attribute, cleared by the kit's log filter
_.__cause__  # exception chaining, read by the websockets library's handshake logging
_.drain_waiters  # websockets Connection: the gateway gives it a list (handshake.GatewayConnection)
_.connection_made, _.data_received, _.connection_lost  # asyncio.Protocol (gateway pipeline)
_.export  # opentelemetry SpanExporter.export (telemetry, bench history)
_.do_GET, _.do_POST, _.log_message  # http.server.BaseHTTPRequestHandler (test servers)
_.install_signal_handlers, _.should_exit  # uvicorn.Server (tests/hooks/receiver.py)
_.main_loop  # uvicorn.Server.main_loop, overridden by the kit (roomstream_kit.serve)
_.pytestmark  # pytest module marks

# -- public API: read by users, not by this tree ----------------------------------------------
_.connects, _.resent  # roomstream_client.Stats counters
_.fatal, _.wait_connected  # roomstream_client.Client
_.NORMAL  # roomstream_contracts.errors.CloseCode: the protocol's close codes, all of them
_.received_deliveries  # a field of `roomstream bench --json`'s result
_.clients_per_gateway  # a field of `roomstream bench publish-hook --json`'s result
_.leading  # roomstream_hooks.leader.Leader: whether this instance leads (for observers)

# -- doubtful, left to their owners ---------------------------------------------------------
_.USER_CONTROL_KINDS  # contracts: user-sharded control kinds; the gateway tail is being rewritten
