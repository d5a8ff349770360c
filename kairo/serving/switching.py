"""Switching served adapters without a restart: load beside, check, switch, retire.

`Switchboard.apply(declared)` makes the server serve what is declared (the watched adapters file, or the
admin routes). For each newly named adapter: pull it by digest (or take its folder), load it into a new
PEFT slot beside the running one, check that it answers (finite logits, one generated token), then point
its name at the new slot in one step under the models' lock — new requests get it from then on. Rows
already waiting or running keep the old slot; it is unloaded once none uses it. A failed load or check
unloads the new slot, keeps the old one serving, and is reported by `/health` (`switch.error`).

The weighted combination (COMBINED_ADAPTER, served when the server started with strengths) is switched the same
way: when a strength the file declares changes, or an adapter weighed into it is switched to other weights, the
combination is made again (PEFT's `add_weighted_adapter`, from the slots now served) in a new slot beside the
old one, checked, pointed at, and the old slot retired once unused. Its digest on `/health` names what it is
made of (kairo.manifests.adapters `combination_digest`). Whether there is a combination at all is fixed at
start (the default model depends on it): a file that drops every strength keeps it, each adapter weighing 1.0.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kairo.serving.models import ModelLoadError, ServedModels, adapter_info, adapter_path, combined_digest
from kairo.serving.options import COMBINED_ADAPTER, AdapterSource, ServerConfig

log = logging.getLogger("kairo.serve")


class SwitchFailed(Exception):
    """A declared adapter could not be served; the one serving before keeps serving."""


@dataclass
class SwitchStatus:
    """The last switch: what was asked for, and how it ended (what `/health` says under `switch`)."""

    wanted: dict[str, str] = field(default_factory=dict)  # name → digest declared
    error: str = ""
    failed_digest: str = ""
    at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"wanted": dict(self.wanted)}
        if self.error:
            out.update(error=self.error, failed_digest=self.failed_digest)
        return out


class Switchboard:
    """Applies declared adapters to the running models, one switch at a time."""

    def __init__(self, models: ServedModels, config: ServerConfig, uses: Any, retire_timeout_s: float = 600):
        self.models = models
        self.config = config
        self.uses = uses  # uses(slot) → whether a waiting or running row still needs that slot
        self.retire_timeout_s = retire_timeout_s
        self.status = SwitchStatus(wanted=dict(models.digests))
        self.served_from = {a.name: a.describe() for a in config.adapters}  # folder or reference, per name
        self._one_at_a_time = threading.Lock()
        self._count = 0
        # the combination served: each served name's weight in it, and the slots it was made of ({} : none)
        self.weights = dict(config.weights) if COMBINED_ADAPTER in models.adapters else {}
        self._combined_from = {n: models.slots.get(n, n) for n in self.weights}

    def apply(self, declared: list[AdapterSource], remove: Iterable[str] = ()) -> list[str]:
        """Serve `declared`, and stop serving the names in `remove`; the names switched. SwitchFailed on the first
        adapter that cannot be served: it and the rest are left as they were."""
        with self._one_at_a_time:
            self.status = SwitchStatus(wanted={a.name: a.digest for a in declared}, at=time.time())
            switched = []
            try:
                for source in declared:
                    if self._serves(source):
                        continue
                    self._switch(source)
                    switched.append(source.name)
                keep = {a.name for a in declared} | {COMBINED_ADAPTER}  # the combination is made here, not declared
                for name in [n for n in remove if n not in keep and n in self.models.adapters]:
                    self.remove(name)
                    switched.append(name)
                if self.weights:
                    weights = self._weights_wanted(declared)
                    self.status.wanted.update(combined_digest(weights, self.models.digests))
                    if weights != self.weights or any(self.models.slots.get(n, n) != self._combined_from.get(n)
                                                      for n in weights):
                        self._combine(weights)
                        switched.append(COMBINED_ADAPTER)
            except SwitchFailed as err:
                self.status.error = str(err)
                raise
            return switched

    def remove(self, name: str) -> None:
        """Stop serving `name`: new requests for it get 404, rows already running finish first."""
        slot = self.models.stop_serving(name)
        self.served_from.pop(name, None)
        if slot is not None:
            self._retire(slot)
            log.info("no longer serving %s", name)

    def _serves(self, source: AdapterSource) -> bool:
        if source.name not in self.models.adapters or self.models.digests.get(source.name, "") != source.digest:
            return False
        # the same digest is the same weights; without one, the same folder or reference is taken as unchanged
        return bool(source.digest) or self.served_from.get(source.name) == source.describe()

    def _switch(self, source: AdapterSource) -> None:
        name, digest = source.name, source.digest
        self.status.failed_digest = digest
        try:
            path = adapter_path(source, self.config)
            info = adapter_info(name, path, self.config.preset)
        except ModelLoadError as err:
            raise SwitchFailed(f"adapter {name} ({digest or source.describe()}): {err}") from err
        self._count += 1
        slot = f"{name}-{(digest.removeprefix('sha256:')[:12] or 'folder')}-{self._count}"
        log.info("loading %s (%s) beside the served adapters", name, digest or path)
        try:
            self.models.load_slot(slot, path)
        except ModelLoadError as err:
            raise SwitchFailed(f"adapter {name} ({digest or source.describe()}): {err}") from err
        try:
            check_answers(self.models, slot)
        except Exception as err:  # whatever the check hit, the new slot goes and the old one stays
            self.models.unload_slot(slot)
            raise SwitchFailed(f"adapter {name} ({digest or source.describe()}) loaded but does not answer: "
                               f"{type(err).__name__}: {err}") from err
        old = self.models.serve(name, slot, digest, info)
        self.served_from[name] = source.describe()
        self.status.failed_digest = ""
        log.info("switched %s to %s", name, digest or path)
        if old is not None:
            self._retire(old)

    def _weights_wanted(self, declared: list[AdapterSource]) -> dict[str, float]:
        """Each adapter served now, weighed: by the strength the file declares for it (1.0 when it declares none),
        by --strength for one given by flag, as before for one already weighed; a name only the admin route loaded
        is left out (it was never part of the workspace's combination)."""
        flags = dict(self.config.strengths)
        from_file = {a.name: a for a in declared if a.from_file}
        out = {}
        for name in (n for n in self.models.adapters if n != COMBINED_ADAPTER):
            if name in from_file:
                strength = from_file[name].strength
                out[name] = 1.0 if strength is None else strength
            elif name in flags or name in self.weights:
                out[name] = flags.get(name, self.weights.get(name, 1.0))
        return out

    def _combine(self, weights: dict[str, float]) -> None:
        """Make the combination of `weights` in a new slot, check it, point COMBINED_ADAPTER at it, retire the old."""
        digest = combined_digest(weights, self.models.digests)[COMBINED_ADAPTER]
        self.status.failed_digest = digest
        self._count += 1
        slot = f"{COMBINED_ADAPTER}-{self._count}"
        made_of = {n: self.models.slots.get(n, n) for n in weights}
        what = ", ".join(f"{n}×{w:g}" for n, w in weights.items())
        try:
            self.models.combine_slot(slot, {made_of[n]: w for n, w in weights.items()}, self.config.combination_type)
        except ModelLoadError as err:
            raise SwitchFailed(f"{COMBINED_ADAPTER} ({what}): {err}") from err
        try:
            check_answers(self.models, slot)
        except Exception as err:  # as for an adapter: the new slot goes, the old combination stays
            self.models.unload_slot(slot)
            raise SwitchFailed(f"{COMBINED_ADAPTER} ({what}) made but does not answer: {type(err).__name__}: "
                               f"{err}") from err
        info = {"combined": dict(weights), "combination_type": self.config.combination_type}
        old = self.models.serve(COMBINED_ADAPTER, slot, digest, info)
        self.weights, self._combined_from = dict(weights), made_of
        self.status.failed_digest = ""
        log.info("switched %s to %s", COMBINED_ADAPTER, what)
        if old is not None:
            self._retire(old)

    def _retire(self, slot: str) -> None:
        """Unload `slot` once no row uses it (in the background: the switch is already done)."""

        def wait_then_unload() -> None:
            deadline = time.monotonic() + self.retire_timeout_s
            while self.uses(slot) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.models.unload_slot(slot)
            log.info("unloaded the retired adapter slot %s", slot)

        threading.Thread(target=wait_then_unload, name=f"kairo-retire-{slot}", daemon=True).start()


def check_answers(models: ServedModels, slot: str) -> None:
    """The new slot gives finite logits for a short prompt and generates a token (else it is not switched to)."""
    import torch

    prompt = models.encode_text("Hello") or [models.pad_id]
    # alone, and as a batch of its own rows runs (set_adapter): PEFT's adapter_names= path raises KeyError in a
    # modules_to_save wrapper that another loaded adapter made and this slot has no copy in
    with models.exclusive(), torch.inference_mode(), models.rows([slot]) as extra:
        device = models.model.get_input_embeddings().weight.device
        ids = torch.tensor([prompt], dtype=torch.long, device=device)
        logits = models.model(input_ids=ids, **extra).logits
        if not bool(torch.isfinite(logits).all()):
            raise ValueError("its logits are not finite (NaN or inf weights?)")
        out = models.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **extra,
                                    max_new_tokens=1, do_sample=False, pad_token_id=models.pad_id)
        if out.shape[1] != ids.shape[1] + 1:
            raise ValueError("it generated no token")
