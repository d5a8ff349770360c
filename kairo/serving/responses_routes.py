"""OpenAI's Responses API, `POST /v1/responses`, as Kaito's transformers runtime serves it: text in, text out.

`input` is a string or a list of messages (`instructions` goes first, as a system message). The answer is a
`response` object whose one output item is the assistant's message; streamed, it is Responses' typed events
(`response.created` … `response.output_text.delta` … `response.completed`), each an SSE `event:` with its data.
Nothing is stored: `previous_response_id` and tools are refused rather than ignored.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from kairo.serving.batching import Completion, GenerationFailed, Job, Sampling
from kairo.serving.errors import ApiError
from kairo.serving.models import PromptError
from kairo.serving.openai_routes import _results
from kairo.serving.schemas import ResponsesRequest
from kairo.serving.state import ServerState

router = APIRouter()


@router.post("/v1/responses", response_model=None)
async def create_response(body: ResponsesRequest, request: Request) -> Any:
    state: ServerState = request.app.state.server
    name = body.unsupported()
    if name:
        raise ApiError(400, f"{name} is not supported by this server — leave it out", name, "unsupported_parameter")
    name, adapter = state.resolve(body.model)
    models = state.require_ready()
    try:
        messages = body.messages()
        if not messages:
            raise ValueError("input is empty — send some text")
        prompt = models.encode_chat(messages)
    except (ValueError, PromptError) as err:
        raise ApiError(400, str(err), "input") from err
    max_new = state.new_tokens(len(prompt), body.max_output_tokens, state.config.default_max_tokens,
                               param="max_output_tokens", prompt_param="input")
    state.check_work([(len(prompt), max_new)], "max_output_tokens")
    temperature = 1.0 if body.temperature is None else body.temperature
    sampling = Sampling(do_sample=temperature > 0, temperature=temperature or 1.0, top_p=body.top_p or 1.0,
                        seed=body.seed if body.seed is not None and temperature > 0 else None)
    job = state.submit(Job(prompt, adapter=adapter, sampling=sampling, max_new_tokens=max_new, model_name=name,
                           stream=body.stream))
    reply = _Response(body, name, len(prompt))
    if body.stream:
        return StreamingResponse(reply.events(job), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    (done,) = await _results([job])
    return reply.body(done)


class _Response:
    """One response's ids and settings, shared by its final body and by each of its streamed events."""

    def __init__(self, body: ResponsesRequest, model: str, prompt_tokens: int):
        self.id = f"resp_{uuid.uuid4().hex}"
        self.item_id = f"msg_{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.request = body
        self.prompt_tokens = prompt_tokens
        self.sequence = 0

    def body(self, done: Completion | None, status: str | None = None) -> dict[str, Any]:
        """The `response` object: in progress (no output yet), or completed / incomplete with the message."""
        incomplete = done is not None and done.finish_reason == "length"
        status = status or ("incomplete" if incomplete else "completed")
        output = [self.item(done.text, "incomplete" if incomplete else "completed")] if done is not None else []
        usage = None
        if done is not None:
            usage = {"input_tokens": self.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
                     "output_tokens": done.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                     "total_tokens": self.prompt_tokens + done.completion_tokens}
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": status, "model": self.model,
            "output": output, "usage": usage, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": self.request.instructions, "max_output_tokens": self.request.max_output_tokens,
            "temperature": self.request.temperature, "top_p": self.request.top_p, "parallel_tool_calls": False,
            "tool_choice": "auto", "tools": [], "text": {"format": {"type": "text"}}, "metadata": {},
            "store": False,
        }

    def item(self, text: str | None, status: str) -> dict[str, Any]:
        content = [] if text is None else [self.part(text)]
        return {"id": self.item_id, "type": "message", "status": status, "role": "assistant", "content": content}

    @staticmethod
    def part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def event(self, kind: str, **data: Any) -> str:
        payload = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n"

    async def events(self, job: Job) -> AsyncIterator[str]:
        """Responses' streamed events, from `response.created` to `response.completed`."""
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        yield self.event("response.created", response=self.body(None, "in_progress"))
        yield self.event("response.in_progress", response=self.body(None, "in_progress"))
        yield self.event("response.output_item.added", output_index=0, item=self.item(None, "in_progress"))
        yield self.event("response.content_part.added", **where, part=self.part(""))
        try:
            async for text in job.pieces():
                yield self.event("response.output_text.delta", **where, delta=text, logprobs=[])
        except GenerationFailed as err:
            error = {"message": str(err), "type": "server_error", "param": None, "code": "generation_failed"}
            yield self.event("error", **error, error=error)
            return
        finally:
            job.cancelled = True  # the client left (or the answer ended): stop generating for it
        done = job.completion
        status = "incomplete" if done.finish_reason == "length" else "completed"
        yield self.event("response.output_text.done", **where, text=done.text, logprobs=[])
        yield self.event("response.content_part.done", **where, part=self.part(done.text))
        yield self.event("response.output_item.done", output_index=0, item=self.item(done.text, status))
        yield self.event(f"response.{status}", response=self.body(done))
