"""Kaito's `/chat`: the body Kaito's inference server reads and its `{"Result": "…"}` answer.

`prompt` is text generation as transformers' pipeline does it: `max_length` counts the prompt too, and
`return_full_text` (the default) puts the prompt before the generated text. `messages` is a conversation:
the chat template lays it out, and `Result` is the assistant's reply.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from kairo.serving.batching import GenerationFailed, Job, Sampling
from kairo.serving.errors import ApiError
from kairo.serving.models import PromptError
from kairo.serving.schemas import KaitoChatRequest, KaitoGenerateKwargs
from kairo.serving.state import ServerState

router = APIRouter()


@router.post("/chat")
async def chat(body: KaitoChatRequest, request: Request) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    name, adapter = state.resolve(body.model)
    models = state.require_ready()
    settings = body.generation()
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
    job = state.submit(Job(
        prompt, adapter=adapter, sampling=_sampling(settings, len(prompt), max_new), max_new_tokens=max_new,
        model_name=name, stop_ids=frozenset(t for t in stop_ids if t is not None),
        clean_up=bool(body.clean_up_tokenization_spaces),
    ))
    try:
        done = await job.result()
    except GenerationFailed as err:
        raise ApiError(500, str(err)) from err
    if body.prompt and body.return_full_text is not False:
        return {"Result": body.prompt + done.text}
    return {"Result": done.text}


def _sampling(g: KaitoGenerateKwargs, prompt_tokens: int, max_new: int) -> Sampling:
    least = g.min_new_tokens if g.min_new_tokens is not None else max(g.min_length - prompt_tokens, 0)
    sample = g.do_sample and g.temperature > 0
    return Sampling(
        do_sample=sample, temperature=g.temperature if sample else 1.0, top_k=g.top_k if sample else 0,
        top_p=g.top_p if sample else 1.0, typical_p=g.typical_p if sample else 1.0,
        repetition_penalty=g.repetition_penalty, num_beams=g.num_beams, early_stopping=g.early_stopping,
        length_penalty=g.length_penalty, no_repeat_ngram_size=g.no_repeat_ngram_size,
        min_new_tokens=min(least, max_new), seed=g.seed if sample else None,
    )
