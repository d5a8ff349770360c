"""Dynamic batching: requests that arrive together are answered by one `generate` call.

Requests wait in a queue. A worker thread (generation never runs on the event loop) takes the oldest,
gives it up to `wait_s` for company (counted from its arrival, or from the end of the previous batch
when it arrived during one), and runs it together with every waiting request that can share its
batch — the same sampling settings, whatever adapter (or the base model) each asks for: `ServedModels.rows`
gives every row its own — up to `max_batch_size`, padded on the left.
A request's rows (its prompts × n) are jobs like any others, but requests take turns: a batch takes rows
from each waiting request in turn, and a request's rows left over go to the back of the queue, so a long
list of prompts cannot hold the generator while a later request waits behind it.
Each row keeps its own limits: a stopping criterion watches every row after every token, ends it at its
own `max_tokens`, at an end-of-sequence token or a stop string, and streams its new text to its client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from kairo.serving.models import ServedModels

log = logging.getLogger("kairo.serve")


@dataclass(frozen=True)
class Sampling:
    """How the next token is picked. Requests share a batch only when these are equal."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    num_beams: int = 1
    early_stopping: bool = False
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    min_new_tokens: int = 0
    seed: int | None = None  # a seeded request runs alone, so the seed alone decides its sample
    # OpenAI's penalties (on the tokens generated so far) and logit_bias ((token id, bias) pairs)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()

    def generation_fields(self) -> dict[str, Any]:
        """The GenerationConfig fields, all set, so the model's own defaults (say, sampling on) never leak in."""
        fields: dict[str, Any] = {
            "do_sample": self.do_sample, "num_beams": self.num_beams, "repetition_penalty": self.repetition_penalty,
            "no_repeat_ngram_size": self.no_repeat_ngram_size, "min_new_tokens": self.min_new_tokens,
        }
        if self.do_sample:
            fields.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, typical_p=self.typical_p)
        if self.num_beams > 1:
            fields.update(early_stopping=self.early_stopping, length_penalty=self.length_penalty)
        return fields

    def logits_processors(self, prompt_width: int) -> list[Any]:
        """OpenAI's penalties and logit_bias, which transformers has no setting for; applied before temperature."""
        if not (self.presence_penalty or self.frequency_penalty or self.logit_bias):
            return []
        import torch
        from transformers import LogitsProcessor

        sampling = self

        class OpenAIPenalties(LogitsProcessor):
            def __call__(self, input_ids: Any, scores: Any) -> Any:
                generated = input_ids[:, prompt_width:]
                if generated.shape[1] and (sampling.presence_penalty or sampling.frequency_penalty):
                    counts = torch.zeros_like(scores).scatter_add_(
                        1, generated, torch.ones_like(generated, dtype=scores.dtype))
                    scores = scores - sampling.frequency_penalty * counts \
                        - sampling.presence_penalty * (counts > 0).to(scores.dtype)
                if sampling.logit_bias:
                    ids = torch.tensor([t for t, _ in sampling.logit_bias], device=scores.device)
                    bias = torch.tensor([b for _, b in sampling.logit_bias], dtype=scores.dtype, device=scores.device)
                    scores = scores.index_add(1, ids, bias.expand(scores.shape[0], -1))
                return scores

        return [OpenAIPenalties()]


@dataclass(frozen=True)
class Completion:
    """A finished answer: its text, why it ended (`stop` or `length`), and token counts."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class GenerationFailed(Exception):
    """The model failed while generating (not the request's fault)."""


class Job:
    """One request's generation: its prompt, limits and settings, and the events its client reads."""

    def __init__(self, prompt: list[int], *, adapter: str | None, sampling: Sampling, max_new_tokens: int,
                 model_name: str = "", stop: tuple[str, ...] = (), stop_ids: frozenset[int] = frozenset(),
                 clean_up: bool = False, stream: bool = False, request: object = None):
        self.prompt = prompt
        self.request = self if request is None else request  # the rows of one request share it
        self.adapter = adapter
        self.sampling = sampling
        self.max_new_tokens = max_new_tokens
        self.model_name = model_name
        self.stop = tuple(s for s in stop if s)
        self.stop_ids = stop_ids
        self.clean_up = clean_up
        self.stream = stream
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self.cancelled = False
        self.enqueued = time.monotonic()
        self._text_tokens = 0  # tokens that belong to the text (a stopping token does not)
        self._sent = ""  # the text already streamed
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    @property
    def key(self) -> tuple[Any, ...]:
        """Jobs with equal keys may share a batch."""
        alone = id(self) if self.sampling.seed is not None else 0
        beams = self.max_new_tokens if self.sampling.num_beams > 1 else 0  # beams get no per-row stop
        return (self.sampling, beams, alone)  # not the adapter: each row of a batch names its own

    # -- the client's side (event loop) -------------------------------------------------------------------

    async def result(self) -> Completion:
        """Wait for the whole answer."""
        async for _ in self.pieces():
            pass
        return self._completion

    async def pieces(self) -> AsyncIterator[str]:
        """The answer's text as it is generated; `completion` holds the totals once it ends."""
        while True:
            kind, value = await self._events.get()
            if kind == "text":
                yield value
            elif kind == "end":
                self._completion: Completion = value
                return
            else:
                raise GenerationFailed(str(value))

    @property
    def completion(self) -> Completion:
        return self._completion

    # -- the worker's side (generation thread) ------------------------------------------------------------

    def _emit(self, kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the client's loop is gone: nobody is listening
            self._loop.call_soon_threadsafe(self._events.put_nowait, (kind, value))

    def take(self, token: int, models: ServedModels) -> None:
        """Record the token this row just generated, and end the row when it should end."""
        self.tokens.append(token)
        if self.cancelled:
            self.finish("cancelled", models)
            return
        if token in models.eos_ids or token in self.stop_ids:
            self.finish("stop", models)
            return
        self._text_tokens = len(self.tokens)
        if self.stream or self.stop:
            text = models.decode(self.tokens, self.clean_up)
            if self._cut_at_stop(text) is not None:
                self.finish("stop", models)
                return
            if self.stream:
                self._send(text, final=False)
        if len(self.tokens) >= self.max_new_tokens:
            self.finish("length", models)

    def finish(self, reason: str, models: ServedModels, text_tokens: list[int] | None = None) -> None:
        """End the row: the final text (cut at a stop string), its last streamed piece, and the totals."""
        if self.finish_reason is not None:
            return
        if text_tokens is None:
            text_tokens = self.tokens[: self._text_tokens]
        text = models.decode(text_tokens, self.clean_up)
        cut = self._cut_at_stop(text)
        if cut is not None:
            text, reason = text[:cut], "stop"
        self.finish_reason = reason
        if self.stream:
            self._send(text, final=True)
        self._emit("end", Completion(text, reason, len(self.prompt), len(self.tokens)))

    def fail(self, error: BaseException) -> None:
        if self.finish_reason is None:
            self.finish_reason = "error"
            self._emit("error", error)

    def _cut_at_stop(self, text: str) -> int | None:
        hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def _send(self, text: str, final: bool) -> None:
        end = len(text)
        if not final:
            # Hold back a half-decoded character, and a tail that may yet become a stop string.
            end -= max(map(len, self.stop)) - 1 if self.stop else 0
            while end > len(self._sent) and text[end - 1] == "\ufffd":
                end -= 1
        if end > len(self._sent) and text.startswith(self._sent):
            self._emit("text", text[len(self._sent) : end])
            self._sent = text[:end]


def _in_turns(jobs: list[Job]) -> list[Job]:
    """`jobs` reordered so that each request gives one row in turn (requests in the order they came)."""
    by_request: dict[int, list[Job]] = {}
    for job in jobs:
        by_request.setdefault(id(job.request), []).append(job)
    rows = list(by_request.values())
    return [row[i] for i in range(max(map(len, rows), default=0)) for row in rows if i < len(row)]


class Batcher:
    """The queue and the worker thread that turns waiting jobs into batched `generate` calls."""

    def __init__(self, models: ServedModels, max_batch_size: int = 32, wait_s: float = 0.01, metrics: Any = None):
        self.models = models
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self.metrics = metrics
        self._pending: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._last_batch_end = 0.0
        self._running: list[Job] = []
        self._thread = threading.Thread(target=self._work, name="kairo-generate", daemon=True)

    def start(self) -> Batcher:
        self._thread.start()
        return self

    def close(self, timeout: float = 30) -> None:
        with self._cond:
            self._closed = True
            for job in self._pending:
                job.fail(GenerationFailed("the server is shutting down"))
            self._pending.clear()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, job: Job) -> Job:
        with self._cond:
            if self._closed:
                raise GenerationFailed("the server is shutting down")
            self._pending.append(job)
            self._cond.notify()
        return job

    def uses(self, slot: str) -> bool:
        """Whether a waiting or running row uses the PEFT slot `slot` (an old adapter is unloaded only once none does)."""
        with self._cond:
            return any(j.adapter == slot for j in (*self._pending, *self._running))

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                try:
                    self.run(batch)
                finally:
                    with self._cond:
                        self._running = []
                self._last_batch_end = time.monotonic()

    def _next_batch(self) -> list[Job] | None:
        """The oldest job and every waiting job that may share its batch, once it is full or waited enough."""
        with self._cond:
            while not self._pending:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._pending[0]
            # Counted from the later of its arrival and the end of the last batch: the clients just answered
            # come straight back, and waiting a moment for them keeps one full batch instead of two halves.
            deadline = max(first.enqueued, self._last_batch_end) + self.wait_s
            while True:
                company = _in_turns([j for j in self._pending if j.key == first.key])[: self.max_batch_size]
                left = deadline - time.monotonic()
                if len(company) >= self.max_batch_size or left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            taken = {id(j) for j in company}
            served = {id(j.request) for j in company}
            rest = [j for j in self._pending if id(j) not in taken]
            # The rows left of the requests just served rejoin the queue behind every other request's.
            self._pending = collections.deque([j for j in rest if id(j.request) not in served]
                                              + [j for j in rest if id(j.request) in served])
            self._running = [j for j in company if not j.cancelled]
        return self._running

    def run(self, jobs: list[Job]) -> None:
        """Generate for `jobs` (one shared key) in one call — or one per adapter that cannot share it (see
        `ServedModels.shared_calls`); every job ends, with an answer or an error."""
        started = time.monotonic()
        self.models.let_loads_go_first()
        try:
            with self.models.lock:  # no adapter is loaded or unloaded between settling the rows and generating
                jobs = self._settle_adapters(jobs)
                for rows in self.models.shared_calls([j.adapter for j in jobs]) if jobs else []:
                    call = [jobs[i] for i in rows]
                    self._generate(call)
                    if self.metrics is not None:
                        self.metrics.observe_batch(call, started)
                    started = time.monotonic()
        except Exception as err:  # the whole batch fails together; the server keeps serving
            log.exception("generation failed for a batch of %d", len(jobs))
            for job in jobs:
                job.fail(GenerationFailed(f"generation failed: {type(err).__name__}: {err}"))

    def _settle_adapters(self, jobs: list[Job]) -> list[Job]:
        """Rows whose slot was retired between their lookup and now move to the slot serving their name now;
        a row whose name is no longer served fails alone."""
        models, kept = self.models, []
        loaded = models.loaded_slots
        for job in jobs:
            if job.adapter is not None and job.adapter not in loaded:
                try:
                    job.adapter = models.adapter_for(job.model_name)
                except KeyError:
                    job.fail(GenerationFailed(f"the adapter {job.model_name} was unloaded"))
                    continue
            kept.append(job)
        return kept

    def _generate(self, jobs: list[Job]) -> None:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        models = self.models
        width = max(len(j.prompt) for j in jobs)
        ids = torch.full((len(jobs), width), models.pad_id, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):
            ids[row, width - len(job.prompt):] = torch.tensor(job.prompt, dtype=torch.long)
            mask[row, width - len(job.prompt):] = 1
        sampling = jobs[0].sampling
        config = GenerationConfig(
            max_new_tokens=max(j.max_new_tokens for j in jobs), pad_token_id=models.pad_id,
            eos_token_id=sorted(models.eos_ids), **sampling.generation_fields(),
        )
        beams = sampling.num_beams > 1

        class EachRow(StoppingCriteria):
            """Called after every token: hands each row its token, and says which rows are done."""

            def __call__(self, input_ids, scores, **kwargs):
                for job, token in zip(jobs, input_ids[:, -1].tolist(), strict=True):
                    if job.finish_reason is None:
                        job.take(int(token), models)
                return torch.tensor([j.finish_reason is not None for j in jobs], device=input_ids.device)

        rows = models.rows([j.adapter for j in jobs], sampling.num_beams)
        with models.lock, rows as extra, torch.inference_mode():
            device = models.model.get_input_embeddings().weight.device
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            out = models.model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
                stopping_criteria=None if beams else StoppingCriteriaList([EachRow()]),
                logits_processor=LogitsProcessorList(sampling.logits_processors(width)), **extra,
            )
        for row, job in enumerate(jobs):
            if beams:  # beams reorder rows while they run, so rows are read from the output
                new = out[row, width:].tolist()
                ends = [i for i, t in enumerate(new) if t in models.eos_ids or t in job.stop_ids]
                job.tokens = new[: ends[0] + 1] if ends else new
                job.finish("stop" if ends else "length", models, new[: ends[0]] if ends else new)
            else:
                job.finish("length", models)  # a row still open ran out of tokens
