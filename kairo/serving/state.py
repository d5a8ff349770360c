"""What the routes share: the loaded models (once they are), the batcher, and the checks every request passes."""

from __future__ import annotations

import time
from typing import Any

from kairo.serving.batching import Batcher, Job
from kairo.serving.errors import ApiError
from kairo.serving.metrics import ServerMetrics
from kairo.serving.models import ServedModels
from kairo.serving.options import ServerConfig
from kairo.serving.switching import Switchboard


class ServerState:
    """The server between requests: loading, then ready with a model and a batcher (or failed)."""

    def __init__(self, config: ServerConfig, metrics: ServerMetrics):
        self.config = config
        self.metrics = metrics
        self.models: ServedModels | None = None
        self.batcher: Batcher | None = None
        self.switchboard: Switchboard | None = None
        self.watcher: Any = None
        self.load_error = ""
        self.started = int(time.time())

    def loaded(self, models: ServedModels) -> None:
        self.batcher = Batcher(models, self.config.max_batch_size, self.config.batch_wait_ms / 1000,
                               self.metrics).start()
        self.switchboard = Switchboard(models, self.config, self.batcher.uses)
        if self.config.adapters_file is not None:
            from kairo.serving.watcher import AdaptersFileWatcher

            self.watcher = AdaptersFileWatcher(self.config.adapters_file, self.switchboard,
                                               self.config.watch_interval_s).start()
        self.models = models
        self.metrics.ready.set(1)

    def failed(self, message: str) -> None:
        self.load_error = message

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.batcher is not None:
            self.batcher.close()

    def served(self) -> dict[str, Any]:
        """What `/health` and `/ready` report about the adapters: each served name's digest, and the last switch."""
        if self.models is None or self.switchboard is None:
            return {}
        return {"adapters": {n: self.models.digests.get(n, "") for n in list(self.models.adapters)},
                "switch": self.switchboard.status.to_dict()}

    def require_ready(self) -> ServedModels:
        """The models, or 503 while they load (or when loading failed)."""
        if self.models is None:
            if self.load_error:
                raise ApiError(503, f"the model failed to load: {self.load_error}", code="model_not_loaded")
            raise ApiError(503, "the model is still loading — try again once /ready answers 200",
                           code="model_loading")
        return self.models

    def resolve(self, name: str | None) -> tuple[str, str | None]:
        """The model a request asked for, and the adapter that serves it (None: the base model); 404 if unknown."""
        models = self.require_ready()
        name = name or self.config.default_model
        try:
            return name, models.adapter_for(name)
        except KeyError:
            raise ApiError(404, f"the model '{name}' does not exist here — available: {', '.join(models.names)}",
                           "model", "model_not_found") from None

    def new_tokens(self, prompt_tokens: int, requested: int | None, default: int, *, param: str = "max_tokens",
                   prompt_param: str = "prompt") -> int:
        """How many tokens to generate: what was asked within the cap and the context, else the default."""
        self.check_prompt(prompt_tokens, prompt_param)
        context, cap = self.require_ready().context_length, self.config.max_tokens_cap
        if requested is None:
            return max(1, min(default, cap, context - prompt_tokens))
        if requested > cap:
            raise ApiError(400, f"{param} is {requested}, over this server's cap of {cap} — ask for at most {cap}",
                           param, "max_tokens_over_cap")
        if prompt_tokens + requested > context:
            raise ApiError(400, f"the prompt is {prompt_tokens} tokens and {param} asks for {requested} more, "
                                f"{prompt_tokens + requested} in all, but the model's context is {context} tokens "
                                f"— shorten {prompt_param} or lower {param}", param, "context_length_exceeded")
        return requested

    def check_prompt(self, prompt_tokens: int, prompt_param: str = "prompt") -> None:
        """400 unless the prompt has tokens and leaves room in the model's context for at least one more."""
        context = self.require_ready().context_length
        if prompt_tokens == 0:
            raise ApiError(400, f"{prompt_param} is empty — send some text", prompt_param)
        if prompt_tokens >= context:
            raise ApiError(400, f"the prompt is {prompt_tokens} tokens, but the model's context is {context} tokens "
                                f"— shorten {prompt_param}", prompt_param, "context_length_exceeded")

    def check_work(self, rows: list[tuple[int, int]], param: str = "max_tokens") -> None:
        """400 when one request's rows (prompt tokens, new tokens) add up to more than the server's per-request bound.

        Each row is processed and generated in full in the worst case, so the bound counts both: a request of
        2,000 prompts × n 8 × 200 tokens would hold the generator for minutes while other clients wait.
        """
        limit = self.config.max_request_tokens
        total = sum(prompt + new for prompt, new in rows)
        if total > limit:
            raise ApiError(400, f"this request asks for up to {total} tokens ({len(rows)} rows: every prompt × n, "
                                f"its tokens plus {param}) — over this server's limit of {limit} tokens per request "
                                "(--max-request-tokens); send fewer prompts, a smaller n or a lower "
                                f"{param}", param, "request_too_large")

    def submit(self, job: Job) -> Job:
        assert self.batcher is not None
        return self.batcher.submit(job)
