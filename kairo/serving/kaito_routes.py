"""Kaito's `/chat`: the body Kaito's inference server reads and its `{"Result": "…"}` answer; and Kaito's
`/v1/metrics`, the machine's GPUs (or CPU) and memory as JSON (Prometheus' counters stay on `/metrics`).

Kaito's newer server takes the same body, its settings at the top level, on `/v1/completions`; that route
answers it here when the body carries a key only Kaito's body has (see `openai_routes`).

`prompt` is text generation as transformers' pipeline does it: `max_length` counts the prompt too, and
`return_full_text` (the default) puts the prompt before the generated text. `messages` is a conversation:
the chat template lays it out, and `Result` is the assistant's reply.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from kairo.serving.batching import GenerationFailed, Job, Sampling
from kairo.serving.errors import ApiError
from kairo.serving.models import PromptError
from kairo.serving.schemas import KaitoChatRequest, KaitoGenerateKwargs
from kairo.serving.state import ServerState

router = APIRouter()
log = logging.getLogger("kairo.serve")
WARNING_HEADER = "X-Kairo-Warning"  # what the server accepted but did not apply


@router.post("/chat")
async def chat(body: KaitoChatRequest, request: Request, response: Response) -> dict[str, Any]:
    return await answer(body, request.app.state.server, response)


async def answer(body: KaitoChatRequest, state: ServerState, response: Response | None = None) -> dict[str, Any]:
    """Kaito's `{"Result": …}` for Kaito's body (on `/chat`, or Kaito's newer `/v1/completions`)."""
    name, adapter = state.resolve(body.model)
    models = state.require_ready()
    try:
        settings = body.generation()
    except ValidationError as err:  # a generation setting given at the top level
        raise RequestValidationError(err.errors()) from None
    ignored = settings.ignored()
    if ignored:  # Kaito accepts keys generate() has no use for; so does kairo, and says so
        warning = f"generate_kwargs: ignored {', '.join(ignored)} (not generation settings this server knows)"
        log.warning("%s", warning)
        if response is not None:  # a header carries printable ASCII only: the client chose these names
            response.headers[WARNING_HEADER] = "".join(c if " " <= c <= "~" else "?" for c in warning)
    answers = settings.num_return_sequences
    if answers > 1 and not (settings.do_sample and settings.temperature > 0 and settings.num_beams == 1):
        raise ApiError(400, f"generate_kwargs.num_return_sequences is {answers}: more than one answer needs "
                            "sampling (do_sample true, temperature above 0, num_beams 1)")
    if body.prompt:
        prompt = models.encode_text((body.prefix or "") + body.prompt)
    elif body.messages is not None:
        if not body.messages:
            raise ApiError(400, "messages is empty — send at least one message")
        try:
            prompt = models.encode_chat([m.model_dump() for m in body.messages])
        except PromptError as err:
            raise ApiError(400, str(err)) from err
    else:
        raise ApiError(400, "Text generation parameter prompt required (or messages, for a conversation)")

    if settings.max_new_tokens is not None:
        wanted = settings.max_new_tokens
        if wanted > state.config.max_tokens_cap:
            raise ApiError(400, f"generate_kwargs.max_new_tokens is {wanted}, over this server's cap of "
                                f"{state.config.max_tokens_cap}")
    else:
        if body.handle_long_generation == "hole":
            # transformers' "hole": drop the prompt's start so that prompt and new tokens fit the context
            keep = models.context_length - min(settings.max_length, state.config.max_tokens_cap)
            if keep <= 0:
                raise ApiError(400, f"generate_kwargs.max_length {settings.max_length} leaves no room for the "
                                    f"prompt in the model's context of {models.context_length} tokens")
            prompt = prompt[-keep:]
        state.check_prompt(len(prompt))
        wanted = settings.max_length - len(prompt)
        if wanted <= 0:
            raise ApiError(400, f"the prompt is {len(prompt)} tokens, but generate_kwargs.max_length is "
                                f"{settings.max_length} and counts the prompt too — raise max_length above "
                                f"{len(prompt)}")
    # Kaito's max_length is a ceiling, not a demand: fit it into the cap and the context instead of refusing.
    wanted = min(wanted, state.config.max_tokens_cap, max(models.context_length - len(prompt), 1))
    max_new = state.new_tokens(len(prompt), wanted, wanted, param="generate_kwargs.max_length")
    stop_ids = settings.eos_token_id if isinstance(settings.eos_token_id, list) else [settings.eos_token_id]
    state.check_work([(len(prompt), max_new)] * answers, "generate_kwargs.max_new_tokens")
    request = object()  # the answers are one request's rows: the batcher serves requests in turn
    jobs = [state.submit(Job(
        prompt, adapter=adapter, sampling=_sampling(settings, len(prompt), max_new, i), max_new_tokens=max_new,
        model_name=name, stop_ids=frozenset(t for t in stop_ids if t is not None), stop=settings.stops(),
        clean_up=bool(body.clean_up_tokenization_spaces), request=request,
    )) for i in range(answers)]
    try:
        done = [await job.result() for job in jobs]
    except GenerationFailed as err:
        raise ApiError(500, str(err)) from err
    # Kaito joins the pipeline's sequences, each with the prompt when return_full_text is on.
    lead = body.prompt if body.prompt and body.return_full_text is not False else ""
    return {"Result": "".join(lead + d.text for d in done)}


def _sampling(g: KaitoGenerateKwargs, prompt_tokens: int, max_new: int, answer: int = 0) -> Sampling:
    least = g.min_new_tokens if g.min_new_tokens is not None else max(g.min_length - prompt_tokens, 0)
    sample = g.do_sample and g.temperature > 0
    return Sampling(
        do_sample=sample, temperature=g.temperature if sample else 1.0, top_k=g.top_k if sample else 0,
        top_p=g.top_p if sample else 1.0, typical_p=g.typical_p if sample else 1.0,
        repetition_penalty=g.repetition_penalty, num_beams=g.num_beams, early_stopping=g.early_stopping,
        length_penalty=g.length_penalty, no_repeat_ngram_size=g.no_repeat_ngram_size,
        min_new_tokens=min(least, max_new), seed=g.seed + answer if sample and g.seed is not None else None,
    )


@router.get("/v1/metrics")
def system_metrics() -> dict[str, Any]:
    """Kaito's system metrics: each GPU's name, load, temperature and memory, or without a GPU the CPU's."""
    import psutil  # comes with peft and accelerate
    import torch

    if torch.cuda.is_available():
        return {"gpu_info": [_gpu(torch, i) for i in range(torch.cuda.device_count())], "cpu_info": None}
    memory = psutil.virtual_memory()
    return {"gpu_info": None, "cpu_info": {
        "load_percentage": psutil.cpu_percent(interval=0.1), "physical_cores": psutil.cpu_count(logical=False) or 0,
        "total_cores": psutil.cpu_count(logical=True) or 0,
        "memory": {"used": _gigabytes(memory.used), "total": _gigabytes(memory.total)}}}


def _gpu(torch: Any, i: int) -> dict[str, Any]:
    free, total = torch.cuda.mem_get_info(i)
    try:  # load and temperature need NVIDIA's management library (pynvml)
        load, temperature = f"{torch.cuda.utilization(i):.2f}%", f"{torch.cuda.temperature(i)} C"
    except Exception:
        load = temperature = "unknown"
    return {"id": str(i), "name": torch.cuda.get_device_name(i), "load": load, "temperature": temperature,
            "memory": {"used": _gigabytes(total - free), "total": _gigabytes(total)}}


def _gigabytes(n: float) -> str:
    return f"{n / 1024**3:.2f} GB"
