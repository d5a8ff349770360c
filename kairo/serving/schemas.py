"""Request bodies: Kaito's `/chat` and the OpenAI completions APIs, as pydantic models.

Unknown fields are accepted and ignored (clients send more than a server uses), except where ignoring
one would silently change the answer (`tools`, `logprobs`): those are refused by the routes. Kaito's
`generate_kwargs` go to transformers' `generate()`, so a key there that kairo does not apply is refused,
unless it holds the value that asks for nothing (Kaito's older servers sent them all with those defaults).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_BEAMS = 8
MAX_CHOICES = 8
MAX_STOP_SEQUENCES = 4
SEED_RANGE = {"ge": -(2**63), "le": 2**63 - 1}  # torch's seeds are 64-bit

# -- Kaito ---------------------------------------------------------------------------------------------


# generate() settings kairo does not apply, and the values that ask for nothing, so they may be ignored.
_KAITO_NOOP: dict[str, tuple[Any, ...]] = {
    "num_beam_groups": (1,), "diversity_penalty": (0,), "encoder_no_repeat_ngram_size": (0,),
    "bad_words_ids": (None, []), "force_words_ids": (None, []), "output_scores": (False,),
    "return_dict_in_generate": (False,), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
    "remove_invalid_values": (None, False), "use_cache": (True, False), "output_attentions": (False,),
    "output_hidden_states": (False,), "max_time": (None,), "return_text": (None, True),
    "return_tensors": (None, False),
}


class KaitoGenerateKwargs(BaseModel):
    """Kaito's `generate_kwargs`, with its defaults (sampling on, top-k 10, 200 tokens in all)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    max_length: int = Field(200, ge=1, description="Prompt plus new tokens")
    min_length: int = Field(0, ge=0, description="Prompt plus new tokens, at least")
    do_sample: bool = True
    early_stopping: bool = False
    num_beams: int = Field(1, ge=1, le=MAX_BEAMS)
    temperature: float = Field(1.0, ge=0)
    top_k: int = Field(10, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    typical_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)
    pad_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    # transformers' own names, which Kaito passes through to generate()
    max_new_tokens: int | None = Field(None, ge=1)
    min_new_tokens: int | None = Field(None, ge=0)
    no_repeat_ngram_size: int = Field(0, ge=0)
    length_penalty: float = 1.0
    num_return_sequences: int = Field(1, ge=1, le=MAX_CHOICES, description="answers, joined as Kaito does")
    stop_strings: str | list[str] | None = Field(None, description="end the answer before any of these")
    seed: int | None = Field(None, **SEED_RANGE)

    @model_validator(mode="after")
    def _nothing_ignored(self) -> KaitoGenerateKwargs:
        for name, value in (self.model_extra or {}).items():
            if name not in _KAITO_NOOP:
                known = ", ".join(KaitoGenerateKwargs.model_fields)
                raise ValueError(f"{name!r} is not a generation setting this server applies — it applies {known}")
            if value not in _KAITO_NOOP[name]:
                raise ValueError(f"{name}={value!r} is not supported by this server — leave it out or send "
                                 f"{_KAITO_NOOP[name][0]!r}")
        return self

    def stops(self) -> tuple[str, ...]:
        if self.stop_strings is None:
            return ()
        return (self.stop_strings,) if isinstance(self.stop_strings, str) else tuple(self.stop_strings)


class KaitoMessage(BaseModel):
    role: str
    content: str


class KaitoChatRequest(BaseModel):
    """Kaito's UnifiedRequestModel: `prompt` for text generation, or `messages` for a conversation."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    prompt: str | None = None
    return_full_text: bool | None = True
    clean_up_tokenization_spaces: bool | None = False
    prefix: str | None = None
    handle_long_generation: Literal["hole"] | None = Field(None, description="'hole': drop the prompt's start")
    generate_kwargs: KaitoGenerateKwargs | None = Field(default_factory=KaitoGenerateKwargs)
    messages: list[KaitoMessage] | None = None
    model: str | None = Field(None, description="kairo: the adapter or base model to answer with")

    def generation(self) -> KaitoGenerateKwargs:
        """`generate_kwargs`, with generation settings given at the top level (Kaito's newer shape) merged in.

        Raises pydantic's ValidationError for a bad top-level setting (the route answers it as a 422).
        """
        given = self.generate_kwargs.model_dump(exclude_unset=True) if self.generate_kwargs else {}
        known = set(KaitoGenerateKwargs.model_fields) | set(_KAITO_NOOP)
        top = {k: v for k, v in (self.model_extra or {}).items() if k in known and k not in given}
        return KaitoGenerateKwargs.model_validate({**top, **given})


# Keys of Kaito's body that no OpenAI (or vLLM) completions request has.
KAITO_ONLY_KEYS = frozenset({"return_full_text", "generate_kwargs", "max_length", "min_length", "do_sample",
                             "num_beams", "clean_up_tokenization_spaces", "prefix", "handle_long_generation"})

# -- OpenAI --------------------------------------------------------------------------------------------


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        kinds = {p.type for p in self.content} - {"text"}
        if kinds:
            raise ValueError(f"content parts of type {', '.join(sorted(kinds))} are not supported; send text")
        return "".join(p.text or "" for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class OpenAIRequest(BaseModel):
    """What chat completions and completions share."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, **SEED_RANGE)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(None, description="token id → bias, -100 to 100")
    user: str | None = None
    # vLLM's extensions, which many OpenAI clients pass through extra_body
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)
    min_tokens: int | None = Field(None, ge=0)

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(value)}")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_biases(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            if not token.isdigit():
                raise ValueError(f"the key {token!r} is not a token id — logit_bias maps token ids to biases")
            if not -100 <= bias <= 100:
                raise ValueError(f"the bias of token {token} is {bias} — biases lie between -100 and 100")
        return value

    def token_biases(self) -> tuple[tuple[int, float], ...]:
        return tuple(sorted((int(t), b) for t, b in (self.logit_bias or {}).items() if b))

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def unsupported(self) -> str | None:
        """The first field this server would have to ignore to answer, if any."""
        extra: dict[str, Any] = self.model_extra or {}
        for name, harmless in _HARMLESS.items():
            if name in extra and extra[name] not in harmless:
                return name
        return None


# Fields the server does not implement, and the values that ask for nothing (so they may be ignored).
_HARMLESS: dict[str, tuple[Any, ...]] = {
    "tools": (None, []), "functions": (None, []), "logprobs": (None, False, 0), "top_logprobs": (None, 0),
    "response_format": (None, {"type": "text"}), "best_of": (None, 1), "suffix": (None, ""),
}


class ChatCompletionRequest(OpenAIRequest):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(OpenAIRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_shape(cls, value: Any) -> Any:
        def ids(v: Any) -> bool:
            return isinstance(v, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in v)

        if isinstance(value, str) or ids(value) or (
                isinstance(value, list) and (all(isinstance(v, str) for v in value) or all(ids(v) for v in value))):
            return value
        raise ValueError("prompt must be a string, a list of strings, a list of token ids, or a list of such lists")

    def kaito_keys(self) -> list[str]:
        """Keys only Kaito's body has: with any, this is Kaito's newer `/v1/completions` request."""
        return sorted(set(self.model_extra or {}) & KAITO_ONLY_KEYS)

    def prompts(self) -> list[str | list[int]]:
        """Each prompt: text, or token ids."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if self.prompt and all(isinstance(t, int) for t in self.prompt):
            return [self.prompt]  # type: ignore[list-item]  # one prompt given as token ids
        return list(self.prompt)  # type: ignore[arg-type]
