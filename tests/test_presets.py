"""Presets and the instance-type catalogue: complete, pinned, and right about GPU memory."""

from __future__ import annotations

import re

import pytest

from kairo.presets import (
    all_instance_types,
    all_presets,
    fitting_instance_types,
    get_instance_type,
    get_preset,
)

KAITO_TUNING_PRESETS = [
    "phi-4", "phi-4-mini-instruct", "phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct",
    "phi-3-medium-4k-instruct", "phi-3-medium-128k-instruct", "phi-3.5-mini-instruct", "mistral-7b",
    "qwen2.5-coder-7b-instruct", "qwen2.5-coder-32b-instruct", "falcon-7b", "falcon-40b", "phi-2",
]
KAIRO_PRESETS = ["llama-3.1-8b-instruct", "mistral-7b-instruct", "qwen2.5-7b-instruct", "falcon-7b-instruct",
                 "tiny-llama-test"]


@pytest.mark.parametrize("name", KAITO_TUNING_PRESETS + KAIRO_PRESETS)
def test_every_required_preset_exists_and_can_be_tuned(name):
    preset = get_preset(name)
    assert preset.supports_tuning
    assert set(preset.tuning.gpu_memory_gib) == {"lora", "qlora"}
    assert preset.tuning.gpu_memory_gib["qlora"] <= preset.tuning.gpu_memory_gib["lora"]


@pytest.mark.parametrize("name", KAITO_TUNING_PRESETS)
def test_kaito_presets_are_marked_as_such(name):
    assert get_preset(name).kaito_preset


def test_hub_presets_pin_a_full_commit():
    hub = [p for p in all_presets().values() if p.source.huggingface]
    assert len(hub) >= 14
    for preset in hub:
        assert re.fullmatch(r"[0-9a-f]{40}", preset.source.huggingface.revision), preset.name
        assert "/" in preset.source.huggingface.repo


def test_mistral_7b_is_v0_3():
    assert get_preset("mistral-7b").source.huggingface.repo == "mistralai/Mistral-7B-v0.3"
    assert get_preset("mistral-7b-instruct").source.huggingface.repo == "mistralai/Mistral-7B-Instruct-v0.3"


def test_tiny_preset_is_built_offline():
    tiny = get_preset("tiny-llama-test")
    assert tiny.source.builtin is not None and tiny.architecture == "LlamaForCausalLM"


def test_no_preset_trusts_remote_code_by_default():
    assert not any(p.trust_remote_code for p in all_presets().values())


@pytest.mark.parametrize(
    "name,gpu,count,memory",
    [
        ("Standard_NC6s_v3", "V100", 1, 16), ("Standard_NC24s_v3", "V100", 4, 16),
        ("Standard_NC4as_T4_v3", "T4", 1, 16), ("Standard_NC64as_T4_v3", "T4", 4, 16),
        ("Standard_NV36ads_A10_v5", "A10", 1, 24), ("Standard_NV72ads_A10_v5", "A10", 2, 24),
        ("Standard_NC24ads_A100_v4", "A100-80GB", 1, 80), ("Standard_NC96ads_A100_v4", "A100-80GB", 4, 80),
        ("Standard_ND96asr_v4", "A100-40GB", 8, 40), ("Standard_ND96amsr_A100_v4", "A100-80GB", 8, 80),
        ("Standard_NC40ads_H100_v5", "H100-NVL", 1, 94), ("Standard_ND96isr_H100_v5", "H100", 8, 80),
        ("Standard_ND96isr_H200_v5", "H200", 8, 141),
    ],
)
def test_catalogue_figures(name, gpu, count, memory):
    itype = get_instance_type(name)
    assert (itype.gpu.model, itype.gpu.count, itype.gpu.memory_gib) == (gpu, count, memory)


def test_v100_and_t4_have_no_bf16():
    assert not get_instance_type("Standard_NC6s_v3").gpu.bf16
    assert not get_instance_type("Standard_NC4as_T4_v3").gpu.bf16
    assert get_instance_type("Standard_NC24ads_A100_v4").gpu.bf16


def test_instance_type_names_are_case_insensitive():
    assert get_instance_type("standard_nc6s_v3").name == "Standard_NC6s_v3"


def test_every_kaito_preset_fits_somewhere_with_both_methods():
    for name in KAITO_TUNING_PRESETS:
        for method in ("lora", "qlora"):
            assert fitting_instance_types(get_preset(name), method), (name, method)


def test_the_seed_fits_a_v100_with_qlora_but_not_lora():
    v100 = get_instance_type("Standard_NC6s_v3")
    phi3 = get_preset("phi-3-mini-128k-instruct")
    assert v100.holds(phi3, "qlora") and not v100.holds(phi3, "lora")


def test_catalogue_is_large_enough():
    families = {t.family for t in all_instance_types().values() if t.cloud == "azure"}
    assert {"NCv3", "NCasT4_v3", "NVadsA10_v5", "NC_A100_v4", "ND_A100_v4", "NC_H100_v5", "ND_H100_v5",
            "ND_H200_v5"} <= families
