"""Mixed-adapter batches through the stacked LoRA layers (`kairo.serving.mixed_lora`) answer what PEFT's own
per-adapter path (`adapter_names=`) answers: adapters of other ranks, scalings, dropout and target layers, the
4-bit base too; the stacks follow slots loaded and unloaded; adapters they cannot reproduce go PEFT's way."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from kairo.serving.batching import Batcher, Job, Sampling
from kairo.serving.models import load_models
from tests.fixtures.server import build_lora_adapter, tiny_config

pytestmark = pytest.mark.slow

PROMPTS = ["Hello", "The capital of France is", "Tell me about the sea and the moon", "Why",
           "Name three colors please", "Good morning", "What is two plus two"]
EVERY_LAYER = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def varied_adapters(tiny_model_dir, tmp_path_factory):
    """Adapters that differ in everything a LoRA layer's output depends on."""
    root = tmp_path_factory.mktemp("varied-adapters")
    settings = {
        "narrow": {"r": 2, "lora_alpha": 8, "lora_dropout": 0.3, "target_modules": ["q_proj", "v_proj"]},
        "wide": {"r": 16, "lora_alpha": 8, "use_rslora": True, "target_modules": EVERY_LAYER},
        "patterned": {"r": 4, "lora_alpha": 4, "target_modules": ["q_proj", "o_proj", "lm_head"],
                      "rank_pattern": {"layers.0.self_attn.q_proj": 12}, "alpha_pattern": {"o_proj": 32}},
    }
    return {name: build_lora_adapter(tiny_model_dir, root / name, seed=10 + i, **lora)
            for i, (name, lora) in enumerate(settings.items())}


@pytest.fixture(scope="module")
def models(tiny_model_dir, lora_adapters, varied_adapters):
    return load_models(tiny_config(tiny_model_dir, {**lora_adapters, **varied_adapters}))


@contextlib.contextmanager
def peft_path(models):
    """PEFT's own adapter_names= path, for comparison."""
    stacked, models.stacked = models.stacked, None
    try:
        yield
    finally:
        models.stacked = stacked


def logits(models, slots: list[str | None]):
    """The logits of one forward pass of a padded batch whose row i runs on `slots[i]`; what generate was given."""
    import torch

    prompts = [models.encode_text(PROMPTS[i % len(PROMPTS)]) for i in range(len(slots))]
    width = max(map(len, prompts))
    ids = torch.tensor([[models.pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with models.lock, models.rows(slots) as extra, torch.inference_mode():
        return models.model(input_ids=ids, attention_mask=mask, **extra).logits, extra


def answers(models, slots: list[str | None], first: int = 0) -> list[str]:
    """Greedy answers of one batch through the batcher, row i on `slots[i]` with the prompt and limit of row
    `first + i` (so a row asked alone asks what it asked in the batch)."""

    async def run() -> list[str]:
        jobs = [Job(models.encode_text(PROMPTS[i % len(PROMPTS)]), adapter=slot, sampling=Sampling(),
                    max_new_tokens=8 + i % 3, model_name=slot or models.preset)
                for i, slot in enumerate(slots, start=first)]
        await asyncio.to_thread(Batcher(models).run, jobs)
        return [(await job.result()).text for job in jobs]

    return asyncio.run(run())


def assert_same_as_peft(models, slots: list[str | None]) -> None:
    import torch

    stacked, extra = logits(models, slots)
    assert extra == {}  # the stacks served it: no adapter_names for PEFT
    with peft_path(models):
        reference, extra = logits(models, slots)
    assert "adapter_names" in extra
    torch.testing.assert_close(stacked, reference, rtol=1e-4, atol=1e-5)


def test_stacked_rows_give_the_logits_peft_gives(models):
    assert_same_as_peft(models, ["alpha", "beta", None, "alpha", "beta", None])


def test_adapters_of_other_ranks_scalings_dropout_and_layers_mix_as_in_peft(models):
    assert_same_as_peft(models, ["narrow", "wide", "patterned", None, "alpha", "wide", "narrow"])


def test_a_batch_multiplies_by_its_own_adapters_columns_only(models):
    import torch

    from kairo.serving.mixed_lora import _row_masks

    stacked = models.stacked
    stacked.covered(models.model)
    q_proj = next(layer for layer in stacked._layers if set(layer.columns) == set(models.loaded_slots))
    index, columns, _ = _row_masks(q_proj, ["alpha", None, "narrow"], {"alpha", None, "narrow"}, torch)
    alpha, narrow = q_proj.columns["alpha"], q_proj.columns["narrow"]
    assert index.tolist() == [*range(alpha[0], alpha[1]), *range(narrow[0], narrow[1])]  # 8 + 2 of the stacked columns
    assert columns.shape == (3, 1, 10) and columns[1].sum() == 0
    full, _, _ = _row_masks(q_proj, sorted(models.loaded_slots), set(models.loaded_slots), torch)
    assert full is None  # every loaded slot in the batch: the stacks as they are


def test_a_row_whose_adapter_skips_a_layer_gets_the_base_layer_there(models):
    # narrow has no LoRA on o_proj or the MLP: its rows there must be the base model's, beside wide's rows
    assert_same_as_peft(models, ["narrow", "wide"])


def test_greedy_answers_of_a_mixed_batch_are_peft_s(models):
    slots = ["alpha", "narrow", None, "wide", "patterned", "beta"]
    stacked = answers(models, slots)
    with peft_path(models):
        assert stacked == answers(models, slots)
    assert len(set(stacked)) >= 5  # the rows really ran on different adapters


def test_beam_search_rows_follow_their_adapter_through_the_stacks(models):
    async def run(slots):
        jobs = [Job(models.encode_text(PROMPTS[1]), adapter=s, sampling=Sampling(num_beams=3), max_new_tokens=5,
                    model_name=s) for s in slots]
        await asyncio.to_thread(Batcher(models).run, jobs)
        return [(await j.result()).text for j in jobs]

    together = asyncio.run(run(["wide", "narrow"]))
    assert together == [asyncio.run(run([s]))[0] for s in ("wide", "narrow")]


def test_the_stacks_follow_a_slot_loaded_and_one_unloaded(tiny_model_dir, lora_adapters, varied_adapters,
                                                          tmp_path):
    models = load_models(tiny_config(tiny_model_dir, lora_adapters))
    assert_same_as_peft(models, ["alpha", "beta", None])  # stacks built for alpha and beta
    models.load_slot("gamma", varied_adapters["wide"])
    assert_same_as_peft(models, ["alpha", "gamma", "beta", None])
    models.unload_slot("beta")
    assert_same_as_peft(models, ["gamma", "alpha", None])
    # the same slot name again, other weights, no batch between: the stacks must hold the new ones
    models.unload_slot("gamma")
    models.load_slot("gamma", build_lora_adapter(tiny_model_dir, tmp_path / "gamma2", seed=99))
    assert_same_as_peft(models, ["gamma", "alpha", None])


def test_mixed_rows_on_the_4bit_base_are_peft_s(tiny_model_dir, lora_adapters, varied_adapters):
    models = load_models(tiny_config(tiny_model_dir, {**lora_adapters, "wide": varied_adapters["wide"]},
                                     quantize="4bit"))
    assert models.quantized
    assert_same_as_peft(models, ["alpha", None, "wide", "beta"])
    slots = ["alpha", "wide", None, "beta"]
    stacked = answers(models, slots)
    with peft_path(models):
        assert stacked == answers(models, slots)


def test_a_modules_to_save_adapter_mixes_with_the_others(tiny_model_dir, lora_adapters, tmp_path):
    # PEFT's own mixed path fails on it (KeyError) beside an adapter that has no saved lm_head
    saved = build_lora_adapter(tiny_model_dir, tmp_path / "saved", seed=5, modules_to_save=["lm_head"])
    models = load_models(tiny_config(tiny_model_dir, {**lora_adapters, "saved": saved}))
    assert models.stacked.covered(models.model) == {"alpha", "beta", "saved"}
    slots = ["alpha", "saved", None, "beta", "saved"]
    assert models.shared_calls(slots) == [[0, 1, 2, 3, 4]]
    mixed = answers(models, slots)
    assert mixed == [answers(models, [slot], first=i)[0] for i, slot in enumerate(slots)]  # as in its own batch
    assert mixed[1] != answers(models, ["alpha"], first=1)[0]  # the saved lm_head answers for its rows


def test_the_adapter_peft_last_switched_on_reaches_no_row_of_a_mixed_batch(tiny_model_dir, lora_adapters,
                                                                           tmp_path, models):
    saved = build_lora_adapter(tiny_model_dir, tmp_path / "saved", seed=5, modules_to_save=["lm_head"])
    with_saved = load_models(tiny_config(tiny_model_dir, {**lora_adapters, "saved": saved}))
    first = answers(with_saved, ["alpha", "beta", None])
    answers(with_saved, ["saved"])  # a batch of its own: set_adapter("saved"), lm_head's saved copy on
    assert answers(with_saved, ["alpha", "beta", None]) == first
    answers(models, ["wide"])  # LoRA on every layer switched on; narrow's rows skip most of them
    assert_same_as_peft(models, ["narrow", None])


def test_a_dora_adapter_runs_alone_beside_a_mixed_batch(tiny_model_dir, lora_adapters, tmp_path):
    # PEFT refuses adapter_names= with DoRA; the stacks do not reproduce it either
    dora = build_lora_adapter(tiny_model_dir, tmp_path / "dora", seed=6, use_dora=True)
    models = load_models(tiny_config(tiny_model_dir, {**lora_adapters, "dora": dora}))
    assert models.stacked.covered(models.model) == {"alpha", "beta"}
    slots = ["dora", "alpha", "beta", None]
    assert models.shared_calls(slots) == [[1, 2, 3], [0]]
    mixed = answers(models, slots)
    assert mixed == [answers(models, [slot], first=i)[0] for i, slot in enumerate(slots)]


def test_mixed_batches_peft_serves_through_peft_s_own_path_with_the_same_answers(tiny_model_dir, lora_adapters,
                                                                                 models):
    from kairo.serving.options import config_from_args
    from kairo.steps import serve

    args = serve.make_parser().parse_args(["--preset", "tiny-llama-test", "--model-dir", str(tiny_model_dir),
                                           "--adapter", f"alpha={lora_adapters['alpha']}",
                                           "--adapter", f"beta={lora_adapters['beta']}", "--device", "cpu",
                                           "--quantize", "none", "--mixed-batches", "peft"])
    through_peft = load_models(config_from_args(args))
    assert through_peft.stacked is None
    _, extra = logits(through_peft, ["alpha", "beta", None])
    assert extra["adapter_names"] == ["alpha", "beta", "__base__"]
    slots = ["alpha", "beta", None, "beta"]
    assert answers(through_peft, slots) == answers(models, slots)


def test_a_layer_whose_forward_something_else_replaced_is_left_to_peft(tiny_model_dir, lora_adapters):
    from peft.tuners.lora import layer as lora

    models = load_models(tiny_config(tiny_model_dir, lora_adapters))
    hooked = next(m for m in models.model.modules() if isinstance(m, lora.Linear))
    own = hooked.forward
    hooked.forward = lambda *args, **kwargs: own(*args, **kwargs)  # as accelerate's dispatch hooks do
    assert models.stacked.covered(models.model) == frozenset()
    assert models.shared_calls(["alpha", "beta"]) == [[0], [1]]  # each adapter's rows by themselves
    assert answers(models, ["alpha", "beta"]) == [answers(models, ["alpha"])[0], answers(models, ["beta"], first=1)[0]]
    assert "forward" in vars(hooked)  # left as it was


def test_trainable_tokens_run_alone_and_reach_no_other_row(tiny_model_dir, lora_adapters, tmp_path):
    models = load_models(tiny_config(tiny_model_dir, lora_adapters))
    before = answers(models, ["alpha", None, "beta", None])
    tokens = build_lora_adapter(tiny_model_dir, tmp_path / "tokens", seed=7,
                                trainable_token_indices=list(range(40, 200)))
    models.load_slot("tokens", tokens)
    assert models.stacked.covered(models.model) == {"alpha", "beta"}
    slots = ["alpha", "tokens", "beta", None]
    assert models.shared_calls(slots) == [[0, 2, 3], [1]]
    alone = answers(models, ["tokens"], first=1)[0]
    assert answers(models, slots) == [before[0], alone, before[2], before[3]]
    assert alone != before[1]  # its tokens do change the answer


def test_a_slot_switched_and_retired_under_mixed_traffic_fails_no_row(tiny_model_dir, lora_adapters,
                                                                       varied_adapters):
    from kairo.serving.options import AdapterSource
    from kairo.serving.switching import Switchboard

    config = tiny_config(tiny_model_dir, lora_adapters)
    models = load_models(config)
    old = answers(models, ["alpha", "beta", None])
    new = answers(load_models(tiny_config(tiny_model_dir, {"beta": varied_adapters["wide"]})), [None, "beta"])[1]
    batcher = Batcher(models, max_batch_size=6, wait_s=0.002).start()
    board = Switchboard(models, config, batcher.uses, retire_timeout_s=30)
    names = ["alpha", "beta", models.preset]

    async def traffic(switched: asyncio.Event) -> list[tuple[str, str, bool]]:
        seen = []
        for _ in range(400):  # bounded; ends soon after the old slot is gone
            jobs = [batcher.submit(Job(models.encode_text(PROMPTS[i]), adapter=models.adapter_for(name),
                                       sampling=Sampling(), max_new_tokens=8 + i, model_name=name))
                    for i, name in enumerate(names)]
            after = switched.is_set()  # every job submitted now was submitted once the switch was done
            seen += [(name, (await job.result()).text, after) for name, job in zip(names, jobs, strict=True)]
            if after and "beta" not in models.loaded_slots:
                break
        return seen

    async def run() -> list[tuple[str, str, bool]]:
        switched = asyncio.Event()
        clients = asyncio.gather(*(traffic(switched) for _ in range(3)))
        await asyncio.sleep(0.3)
        declared = [AdapterSource("alpha", path=lora_adapters["alpha"]),
                    AdapterSource("beta", path=varied_adapters["wide"], digest="sha256:" + "c" * 64)]
        await asyncio.to_thread(board.apply, declared)
        switched.set()
        return [row for rows in await clients for row in rows]

    try:
        seen = asyncio.run(run())
    finally:
        batcher.close()
    assert "beta" not in models.loaded_slots  # the retired slot went, and its stacks with it
    expected = dict(zip(names, old, strict=True))
    for name, answer, after in seen:
        if name == "beta":
            assert answer == new if after else answer in (old[1], new)
        else:
            assert answer == expected[name]
    assert {a for n, a, after in seen if n == "beta" and not after} >= {old[1]}  # traffic ran before the switch
    assert any(after for _, _, after in seen)  # and after it
