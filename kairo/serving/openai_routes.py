"""The OpenAI-compatible routes: `/v1/chat/completions`, `/v1/completions` (plain and streamed), `/v1/models`.

Streams are server-sent events in OpenAI's chunk format, ending with `data: [DONE]`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from kairo.serving import kaito_routes
from kairo.serving.batching import Completion, GenerationFailed, Job, Sampling
from kairo.serving.errors import ApiError
from kairo.serving.models import PromptError, ServedModels
from kairo.serving.schemas import ChatCompletionRequest, CompletionRequest, KaitoChatRequest, OpenAIRequest
from kairo.serving.state import ServerState

router = APIRouter()
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    return {"object": "list", "data": [_model_card(state, name) for name in state.require_ready().names]}


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    name, _ = state.resolve(model_id)
    return _model_card(state, name)


def _model_card(state: ServerState, name: str) -> dict[str, Any]:
    models = state.require_ready()
    preset = models.preset
    card = {"id": name, "object": "model", "created": state.started, "owned_by": "kairo", "root": name,
            "parent": preset if name != preset else None}
    if models.digests.get(name):  # the adapter's weights being served (a switch changes it)
        card["digest"] = models.digests[name]
    return card


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    state: ServerState = request.app.state.server
    _refuse_unsupported(body)
    name, adapter = state.resolve(body.model)
    models = state.require_ready()
    if not body.messages:
        raise ApiError(400, "messages is empty — send at least one message", "messages")
    try:
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        prompt = models.encode_chat(messages)
    except (ValueError, PromptError) as err:
        raise ApiError(400, str(err), "messages") from err
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    max_new = state.new_tokens(len(prompt), body.max_completion_tokens or body.max_tokens,
                               state.config.default_max_tokens, param=param, prompt_param="messages")
    _check_token_ids(models, [t for t, _ in body.token_biases()], "logit_bias")
    state.check_work([(len(prompt), max_new)] * body.n, param)
    group = object()  # the choices are one request's rows: the batcher serves requests in turn
    jobs = [state.submit(_job(body, prompt, adapter, name, max_new, choice, group)) for choice in range(body.n)]
    reply = _Reply("chatcmpl", "chat.completion", name)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _sse(reply.stream(jobs, include_usage, chat=True))
    done = await _results(jobs)
    return reply.body([{"index": i, "message": {"role": "assistant", "content": c.text},
                        "logprobs": None, "finish_reason": c.finish_reason} for i, c in enumerate(done)],
                      _usage(done, len(prompt)))


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request, response: Response) -> Any:
    state: ServerState = request.app.state.server
    if body.kaito_keys():  # Kaito's newer server answers its own body here, with {"Result": …}
        try:
            kaito = KaitoChatRequest.model_validate(body.model_dump(exclude_unset=True))
        except ValidationError as err:
            raise RequestValidationError(err.errors()) from None
        return await kaito_routes.answer(kaito, state, response)
    _refuse_unsupported(body)
    name, adapter = state.resolve(body.model)
    models = state.require_ready()
    given = body.prompts()
    if not given:
        raise ApiError(400, "prompt is an empty list — send at least one prompt", "prompt")
    prompts = [models.encode_text(p) if isinstance(p, str) else _check_token_ids(models, p, "prompt") for p in given]
    texts = [p if isinstance(p, str) else models.decode(p) for p in given]
    limits = [state.new_tokens(len(p), body.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS) for p in prompts]
    _check_token_ids(models, [t for t, _ in body.token_biases()], "logit_bias")
    state.check_work([(len(p), m) for p, m in zip(prompts, limits, strict=True) for _ in range(body.n)])
    group = object()  # one request's rows: the batcher serves requests in turn, so a long list starves no one
    jobs = [state.submit(_job(body, p, adapter, name, m, choice, group))
            for p, m in zip(prompts, limits, strict=True) for choice in range(body.n)]
    echoes = [t for t in texts for _ in range(body.n)] if body.echo else None
    reply = _Reply("cmpl", "text_completion", name)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _sse(reply.stream(jobs, include_usage, chat=False, echoes=echoes))
    done = await _results(jobs)
    choices = [{"index": i, "text": (echoes[i] if echoes else "") + c.text, "logprobs": None,
                "finish_reason": c.finish_reason} for i, c in enumerate(done)]
    return reply.body(choices, _usage(done, sum(len(p) for p in prompts)))


def _refuse_unsupported(body: OpenAIRequest) -> None:
    name = body.unsupported()
    if name:
        raise ApiError(400, f"{name} is not supported by this server — leave it out", name, "unsupported_parameter")


def _check_token_ids(models: ServedModels, ids: list[int], param: str) -> list[int]:
    """`ids`, when every one is in the model's vocabulary; 400 otherwise."""
    vocab = models.vocab_size
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise ApiError(400, f"{param}: token id {bad[0]} is not in the model's vocabulary of {vocab} tokens "
                            f"(ids 0 to {vocab - 1})", param)
    return ids


def _job(body: OpenAIRequest, prompt: list[int], adapter: str | None, name: str, max_new: int,
         choice: int = 0, request: object = None) -> Job:
    """Choice `choice` of `n`; with a seed, choice i samples with seed + i, so the n choices differ."""
    temperature = 1.0 if body.temperature is None else body.temperature  # OpenAI samples by default
    sampling = Sampling(
        do_sample=temperature > 0, temperature=temperature or 1.0, top_p=body.top_p or 1.0, top_k=body.top_k or 0,
        repetition_penalty=body.repetition_penalty or 1.0, min_new_tokens=min(body.min_tokens or 0, max_new),
        # greedy needs no seed, and may share a batch
        seed=body.seed + choice if body.seed is not None and temperature > 0 else None,
        presence_penalty=body.presence_penalty or 0.0, frequency_penalty=body.frequency_penalty or 0.0,
        logit_bias=body.token_biases(),
    )
    return Job(prompt, adapter=adapter, sampling=sampling, max_new_tokens=max_new, model_name=name,
               stop=body.stop_sequences(), stream=body.stream, request=request)


async def _results(jobs: list[Job]) -> list[Completion]:
    try:
        return [await job.result() for job in jobs]
    except GenerationFailed as err:
        raise ApiError(500, str(err), code="generation_failed") from err


def _usage(done: list[Completion], prompt_tokens: int) -> dict[str, int]:
    completion = sum(c.completion_tokens for c in done)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def _sse(events: AsyncIterator[dict[str, Any] | str]) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        async for event in events:
            yield f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class _Reply:
    """One answer's id, object type, timestamp and model, shared by its body or by each of its chunks."""

    def __init__(self, prefix: str, kind: str, model: str):
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.kind = kind
        self.model = model
        self.created = int(time.time())

    def body(self, choices: list[dict[str, Any]], usage: dict[str, int]) -> dict[str, Any]:
        return {"id": self.id, "object": self.kind, "created": self.created, "model": self.model,
                "choices": choices, "usage": usage}

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        kind = "chat.completion.chunk" if self.kind == "chat.completion" else self.kind
        data: dict[str, Any] = {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                                "choices": choices}
        if usage is not None:
            data["usage"] = usage
        return data

    async def stream(self, jobs: list[Job], include_usage: bool, chat: bool,
                     echoes: list[str] | None = None) -> AsyncIterator[dict[str, Any] | str]:
        """Each choice's pieces in turn (all were generated together), then usage if asked, then [DONE]."""
        piece: Callable[[int, str, str | None], dict[str, Any]]
        if chat:
            def piece(i: int, text: str, end: str | None) -> dict[str, Any]:
                return {"index": i, "delta": {"content": text} if end is None else {}, "logprobs": None,
                        "finish_reason": end}
        else:
            def piece(i: int, text: str, end: str | None) -> dict[str, Any]:
                return {"index": i, "text": text, "logprobs": None, "finish_reason": end}
        try:
            for i, job in enumerate(jobs):
                if chat:
                    yield self.chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                                       "logprobs": None, "finish_reason": None}])
                elif echoes:
                    yield self.chunk([piece(i, echoes[i], None)])
                async for text in job.pieces():
                    yield self.chunk([piece(i, text, None)])
                yield self.chunk([piece(i, "", job.completion.finish_reason)])
            if include_usage:
                done = [j.completion for j in jobs]
                prompts = {id(j.prompt): len(j.prompt) for j in jobs}
                yield self.chunk([], _usage(done, sum(prompts.values())))
        except GenerationFailed as err:
            yield {"error": {"message": str(err), "type": "server_error", "param": None, "code": "generation_failed"}}
        finally:
            for job in jobs:  # the client left: stop generating for it
                job.cancelled = True
        yield "[DONE]"
