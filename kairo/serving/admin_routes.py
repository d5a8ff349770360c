"""vLLM's admin routes for adapters: `POST /v1/load_lora_adapter` and `POST /v1/unload_lora_adapter`.

The same switch the watched adapters file makes (`switching`), by hand, with vLLM's bodies: `lora_name`,
`lora_path` (a folder, a registry reference or an OCI layout on disk) and `load_inplace` (replace an
adapter served under that name). They change what runs without touching the declaration, so the next
change of the adapters file (or a restart) puts the declared adapters back. They need the API key and
answer 404 on a server started without one: anyone who can reach the port could otherwise swap the weights.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from kairo.problems import InvalidInput
from kairo.serving.errors import ApiError
from kairo.serving.options import parse_adapter
from kairo.serving.state import ServerState
from kairo.serving.switching import SwitchFailed

router = APIRouter()


class LoadLoRAAdapterRequest(BaseModel):
    """vLLM's body for /v1/load_lora_adapter."""

    model_config = ConfigDict(extra="forbid")
    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)
    load_inplace: bool = False


class UnloadLoRAAdapterRequest(BaseModel):
    """vLLM's body for /v1/unload_lora_adapter (`lora_int_id` is accepted and unused: names are unique here)."""

    model_config = ConfigDict(extra="forbid")
    lora_name: str = Field(min_length=1)
    lora_int_id: int | None = None


def _admin(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    if not state.config.api_key:
        raise ApiError(404, "the adapter admin routes are off: they are served only with an API key "
                            "(--api-key-file or $KAIRO_API_KEY)", code="admin_routes_off")
    state.require_ready()
    assert state.switchboard is not None
    return state


@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
async def load_lora_adapter(body: LoadLoRAAdapterRequest, request: Request) -> str:
    state = _admin(request)
    models = state.require_ready()
    if body.lora_name == models.preset:
        raise ApiError(400, f"'{body.lora_name}' is the base model's name — pick another", "lora_name")
    if body.lora_name in models.adapters and not body.load_inplace:
        raise ApiError(400, f"The lora adapter '{body.lora_name}' has already been loaded. If you want to load "
                            "the adapter in place, set 'load_inplace' to True.", "lora_name")
    try:
        source = parse_adapter(f"{body.lora_name}={body.lora_path}")
    except InvalidInput as err:
        raise ApiError(400, "; ".join(str(p) for p in err.problems), "lora_path") from err
    try:
        await asyncio.to_thread(state.switchboard.apply, [source])
    except SwitchFailed as err:
        raise ApiError(400, str(err), "lora_path", "adapter_load_failed") from err
    return f"Success: LoRA adapter '{body.lora_name}' added successfully."


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse)
async def unload_lora_adapter(body: UnloadLoRAAdapterRequest, request: Request) -> str:
    state = _admin(request)
    if body.lora_name not in state.require_ready().adapters:
        raise ApiError(404, f"The lora adapter '{body.lora_name}' cannot be found.", "lora_name", "model_not_found")
    state.switchboard.remove(body.lora_name)
    return f"Success: LoRA adapter '{body.lora_name}' removed successfully."
