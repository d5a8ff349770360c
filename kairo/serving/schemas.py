"""Request bodies: Kaito's `/chat` and the OpenAI completions APIs, as pydantic models.

Unknown fields are accepted and ignored (clients send more than a server uses), except where ignoring
one would silently change the answer (`tools`, `logprobs`): those are refused by the routes. Kaito's
`generate_kwargs` go to transformers' `generate()`: a setting kairo knows but does not apply is refused unless
it holds the value that asks for nothing (Kaito's older servers sent them all with those defaults); a key
no generation setting has is ignored with a warning (Kaito's own examples send `additional_param`); and a key
that would hand `generate()` code or a second model (`streamer`, `assistant_model`, `custom_generate`…) is
refused by name. Every body refuses text that is not Unicode (a lone surrogate such as `"\\ud800"`), and a
boolean where a number is meant (`max_tokens: true`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

MAX_BEAMS = 8
MAX_CHOICES = 8
MAX_STOP_SEQUENCES = 4
SEED_RANGE = {"ge": -(2**63), "le": 2**63 - 1}  # torch's seeds are 64-bit


def _not_a_boolean(value: Any) -> Any:
    """pydantic reads `true` as 1 where an int is meant: a client that sent a boolean meant something else."""
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is a boolean — send a number")
    return value


Int = Annotated[int, BeforeValidator(_not_a_boolean)]
Float = Annotated[float, BeforeValidator(_not_a_boolean)]


def lone_surrogate_at(value: Any) -> str | None:
    """Where in a parsed JSON body a string holds a lone surrogate (`"\\ud800"`), which no UTF-8 can carry.

    Walked with a stack, not recursion: a body nested as deep as the JSON parser allows is still judged.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return path or "the body"
        elif isinstance(node, dict):
            for key, item in node.items():
                stack += [(key, path or "the body"), (item, f"{path}.{key}" if path else str(key))]
        elif isinstance(node, list):
            stack += [(item, f"{path}[{i}]") for i, item in enumerate(node)]
    return None


class Body(BaseModel):
    """A request body: any text in it, known field or not, must be Unicode the server can encode."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _unicode_only(cls, value: Any) -> Any:
        where = lone_surrogate_at(value)
        if where:
            raise ValueError(f"{where}: holds a lone UTF-16 surrogate (such as \\ud800), which is not Unicode text "
                             "— send valid UTF-8")
        return value

# -- Kaito ---------------------------------------------------------------------------------------------


# generate() arguments that take code, callables or a second model: never accepted from a request.
KAITO_REFUSED = frozenset({
    "streamer", "assistant_model", "assistant_tokenizer", "tokenizer", "custom_generate", "trust_remote_code",
    "logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn", "synced_gpus", "generation_config",
    "negative_prompt_ids", "negative_prompt_attention_mask", "watermarking_config", "cache_implementation",
    "past_key_values",
})

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

    max_length: Int = Field(200, ge=1, description="Prompt plus new tokens")
    min_length: Int = Field(0, ge=0, description="Prompt plus new tokens, at least")
    do_sample: bool = True
    early_stopping: bool = False
    num_beams: Int = Field(1, ge=1, le=MAX_BEAMS)
    temperature: Float = Field(1.0, ge=0)
    top_k: Int = Field(10, ge=0)
    top_p: Float = Field(1.0, gt=0, le=1)
    typical_p: Float = Field(1.0, gt=0, le=1)
    repetition_penalty: Float = Field(1.0, gt=0)
    pad_token_id: Int | None = None
    eos_token_id: Int | list[Int] | None = None
    # transformers' own names, which Kaito passes through to generate()
    max_new_tokens: Int | None = Field(None, ge=1)
    min_new_tokens: Int | None = Field(None, ge=0)
    no_repeat_ngram_size: Int = Field(0, ge=0)
    length_penalty: Float = 1.0
    num_return_sequences: Int = Field(1, ge=1, le=MAX_CHOICES, description="answers, joined as Kaito does")
    stop_strings: str | list[str] | None = Field(None, description="end the answer before any of these")
    seed: Int | None = Field(None, **SEED_RANGE)

    @model_validator(mode="after")
    def _nothing_ignored(self) -> KaitoGenerateKwargs:
        for name, value in (self.model_extra or {}).items():
            if name in KAITO_REFUSED:
                raise ValueError(f"{name!r} hands generate() code or another model, which this server never "
                                 "takes from a request — leave it out")
            if name in _KAITO_NOOP and value not in _KAITO_NOOP[name]:
                raise ValueError(f"{name}={value!r} is not supported by this server — leave it out or send "
                                 f"{_KAITO_NOOP[name][0]!r}")
        return self

    def ignored(self) -> list[str]:
        """Keys that are no generation setting at all: accepted (as Kaito accepts them) and ignored."""
        return sorted(k for k in (self.model_extra or {}) if k not in _KAITO_NOOP)

    def stops(self) -> tuple[str, ...]:
        if self.stop_strings is None:
            return ()
        return (self.stop_strings,) if isinstance(self.stop_strings, str) else tuple(self.stop_strings)


class KaitoMessage(BaseModel):
    role: str
    content: str


class KaitoChatRequest(Body):
    """Kaito's UnifiedRequestModel: `prompt` for text generation, or `messages` for a conversation."""

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
        known = set(KaitoGenerateKwargs.model_fields) | set(_KAITO_NOOP) | KAITO_REFUSED
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


class OpenAIRequest(Body):
    """What chat completions and completions share."""

    model: str | None = None
    max_tokens: Int | None = Field(None, ge=1)
    temperature: Float | None = Field(None, ge=0, le=2)
    top_p: Float | None = Field(None, gt=0, le=1)
    n: Int = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: Int | None = Field(None, **SEED_RANGE)
    presence_penalty: Float | None = Field(None, ge=-2, le=2)
    frequency_penalty: Float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, Float] | None = Field(None, description="token id → bias, -100 to 100")
    user: str | None = None
    # vLLM's extensions, which many OpenAI clients pass through extra_body
    top_k: Int | None = Field(None, ge=0)
    repetition_penalty: Float | None = Field(None, gt=0)
    min_tokens: Int | None = Field(None, ge=0)

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
    max_completion_tokens: Int | None = Field(None, ge=1)


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


# -- OpenAI's Responses API ------------------------------------------------------------------------------


class InputItem(BaseModel):
    """One item of a Responses `input` list; kairo answers text messages (`type: message`, the default)."""

    model_config = ConfigDict(extra="allow")

    type: str = "message"
    role: Literal["system", "developer", "user", "assistant"] | None = None
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        kinds = {p.type for p in self.content} - {"input_text", "output_text", "text"}
        if kinds:
            raise ValueError(f"content parts of type {', '.join(sorted(kinds))} are not supported; send text "
                             "(input_text)")
        return "".join(p.text or "" for p in self.content)


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: dict[str, Any] | None = None


class ResponsesRequest(Body):
    """`POST /v1/responses`: text in (a string, or messages), text out, plain or streamed."""

    model: str | None = None
    input: str | list[InputItem]
    instructions: str | None = Field(None, description="a system message put before the input")
    max_output_tokens: Int | None = Field(None, ge=1)
    temperature: Float | None = Field(None, ge=0, le=2)
    top_p: Float | None = Field(None, gt=0, le=1)
    stream: bool = False
    seed: Int | None = Field(None, **SEED_RANGE)
    text: TextConfig | None = None

    def unsupported(self) -> str | None:
        """The first field this server would have to ignore to answer, if any."""
        extra: dict[str, Any] = self.model_extra or {}
        for name, harmless in _RESPONSES_HARMLESS.items():
            if name in extra and extra[name] not in harmless:
                return name
        if self.text is not None and self.text.format not in (None, {"type": "text"}):
            return "text.format"
        return None

    def messages(self) -> list[dict[str, str]]:
        """The conversation the chat template lays out: instructions first, then the input."""
        found = [{"role": "system", "content": self.instructions}] if self.instructions else []
        if isinstance(self.input, str):
            return [*found, {"role": "user", "content": self.input}]
        for i, item in enumerate(self.input):
            if item.type != "message" or item.role is None:
                raise ValueError(f"input[{i}] is of type {item.type!r} — this server answers messages of text "
                                 "(role and content)")
            try:
                found.append({"role": "system" if item.role == "developer" else item.role, "content": item.text()})
            except ValueError as err:
                raise ValueError(f"input[{i}]: {err}") from None
        return found


# Responses fields kairo does not implement, and the values that ask for nothing.
_RESPONSES_HARMLESS: dict[str, tuple[Any, ...]] = {
    "tools": (None, []), "tool_choice": (None, "auto", "none"), "previous_response_id": (None,),
    "conversation": (None,), "background": (None, False), "reasoning": (None,), "prompt": (None,),
    "top_logprobs": (None, 0), "truncation": (None, "disabled"), "max_tool_calls": (None,),
}
