"""The persister's fast trace-context extraction gives exactly what the propagator gives."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from roomstream_history.persist import parent_context, w3c_propagation
from roomstream_kit.telemetry import extract_context

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.mark.parametrize(
    "carrier",
    [
        {"traceparent": f"00-{TRACE}-{SPAN}-01"},
        {"traceparent": f"00-{TRACE}-{SPAN}-00"},
        {"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "a=1,b=2"},
        {"traceparent": f"00-{TRACE.upper()}-{SPAN}-01"},
        {"traceparent": f"00-{'0' * 32}-{SPAN}-01"},
        {"traceparent": f"00-{TRACE}-{'0' * 16}-01"},
        {"traceparent": f"ff-{TRACE}-{SPAN}-01"},
        {"traceparent": f"01-{TRACE}-{SPAN}-01-extra"},
        {"traceparent": f"00-{TRACE}-{SPAN}-01-extra"},
        {"traceparent": f" 00-{TRACE}-{SPAN}-01 "},
        {"traceparent": ""},
        {"other": "x"},
        {},
    ],
)
def test_parent_context_matches_the_propagator(carrier: dict[str, str]) -> None:
    assert w3c_propagation()  # the default propagator
    fast = trace.get_current_span(parent_context(carrier, True)).get_span_context()
    slow = trace.get_current_span(extract_context(carrier)).get_span_context()
    assert fast == slow
    assert (fast.is_remote, fast.trace_flags, fast.trace_state) == (
        slow.is_remote,
        slow.trace_flags,
        slow.trace_state,
    )
