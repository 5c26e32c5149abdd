"""REST: dial, list, inspect and command calls."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from callbridge.api.auth import Caller, Dialer, KeyHolder, Reader
from callbridge.calls.model import CallState
from callbridge.calls.service import CallNotFound, DialOptions
from callbridge.runtime import runtime_of

__all__ = ["router"]

router = APIRouter(prefix="/api/calls", tags=["calls"])

# A SIP URI of printable characters only (no NUL, which PostgreSQL cannot store).
E164_OR_SIP = r"^(\+[1-9]\d{1,14}|sips?:[^@\s\x00-\x1f\x7f]+@[^\s\x00-\x1f\x7f]+)$"


class DialBody(BaseModel):
    """Place an outbound call that streams its audio to this service."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    to: str = Field(
        pattern=E164_OR_SIP, max_length=256, description="E.164 number or SIP URI to call."
    )
    from_: str | None = Field(
        None, alias="from", pattern=r"^\+[1-9]\d{1,14}$", description="Caller id (+E.164)."
    )
    stream_track: Literal["inbound_track", "outbound_track", "both_tracks"] = "both_tracks"
    bidirectional: bool = Field(True, description="Allow talking back (rtp bidirectional mode).")
    codec: Literal["PCMU", "PCMA", "L16"] | None = Field(
        None,
        description="Codec Telnyx streams to us; default: the call's own. G722, OPUS and "
        "AMR-WB are not relayed to browsers.",
    )
    client_state: str | None = Field(None, max_length=4096, description="Base64, echoed back.")
    timeout_secs: int | None = Field(None, ge=5, le=600, description="Ring timeout.")

    @field_validator("client_state")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("client_state must be valid base64") from None
        return value


def _covered(caller: Caller, call_control_id: str) -> None:
    """A token limited to some calls reads nothing of the others (404: not even existence)."""
    if not caller.covers(call_control_id):
        raise CallNotFound(call_control_id)


def _call(call: Any) -> dict[str, Any]:
    return {"data": call.public()}


@router.post("", status_code=201, summary="Dial")
async def dial(body: DialBody, request: Request, caller: Dialer) -> dict[str, Any]:
    calls = runtime_of(request).calls
    call = await calls.dial(
        DialOptions(
            to=body.to,
            from_number=body.from_,
            stream_track=body.stream_track,
            bidirectional=body.bidirectional,
            codec=body.codec,
            client_state=body.client_state,
            timeout_secs=body.timeout_secs,
        )
    )
    return _call(call)


@router.get("", summary="List calls, newest first")
async def list_calls(
    request: Request,
    caller: Reader,
    state: Annotated[list[CallState] | None, Query(description="Repeatable state filter.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    states = [s.value for s in state] if state else None
    only = None if caller.grant is None else caller.grant.calls
    calls, total = await runtime_of(request).calls.list_calls(states, limit, offset, only)
    return {
        "data": [call.public() for call in calls],
        "meta": {"total": total, "limit": limit, "offset": offset},
    }


@router.get("/{call_control_id}", summary="One call")
async def get_call(call_control_id: str, request: Request, caller: Reader) -> dict[str, Any]:
    _covered(caller, call_control_id)
    return _call(await runtime_of(request).calls.require(call_control_id))


@router.get("/{call_control_id}/events", summary="The call's stored event log")
async def call_events(call_control_id: str, request: Request, caller: Reader) -> dict[str, Any]:
    _covered(caller, call_control_id)
    events = await runtime_of(request).calls.events(call_control_id)
    return {"data": [event.to_message() for event in events]}


@router.post("/{call_control_id}/answer", summary="Answer an inbound call, streaming to us")
async def answer(call_control_id: str, request: Request, caller: KeyHolder) -> dict[str, Any]:
    return _call(await runtime_of(request).calls.answer(call_control_id))


@router.post("/{call_control_id}/hangup", summary="Hang up (idempotent)")
async def hangup(call_control_id: str, request: Request, caller: KeyHolder) -> dict[str, Any]:
    return _call(await runtime_of(request).calls.hangup(call_control_id))


@router.post("/{call_control_id}/streaming/start", summary="(Re)start media streaming to us")
async def streaming_start(
    call_control_id: str, request: Request, caller: KeyHolder
) -> dict[str, Any]:
    return _call(await runtime_of(request).calls.start_streaming(call_control_id))


@router.post("/{call_control_id}/streaming/stop", summary="Stop media streaming")
async def streaming_stop(
    call_control_id: str, request: Request, caller: KeyHolder
) -> dict[str, Any]:
    return _call(await runtime_of(request).calls.stop_streaming(call_control_id))
