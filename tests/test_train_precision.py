"""The precision decision, a pure function of the GPU's compute capability (None: CPU)."""

from __future__ import annotations

import pytest

from kairo.problems import InvalidInput
from kairo.training.devices import choose_precision

A100, H100, V100, T4 = (8, 0), (9, 0), (7, 0), (7, 5)


def test_gpus_with_bfloat16_compute_in_it_by_kaitos_default():
    for capability in (A100, H100):
        precision = choose_precision(capability, preferred="bfloat16")
        assert (precision.compute_dtype, precision.bf16, precision.fp16) == ("bfloat16", True, False)


@pytest.mark.parametrize("capability", [V100, T4])
def test_gpus_without_bfloat16_fall_back_to_float16_with_a_loss_scaler_and_say_so(capability):
    precision = choose_precision(capability, preferred="bfloat16", gpu="Tesla V100")
    assert (precision.compute_dtype, precision.bf16, precision.fp16) == ("float16", False, True)
    assert "has no bfloat16" in precision.note and "loss scaler" in precision.note


def test_forcing_bf16_on_a_gpu_without_it_is_a_clear_error():
    with pytest.raises(InvalidInput) as err:
        choose_precision(V100, preferred="bfloat16", bf16=True, gpu="Tesla V100-SXM2-16GB")
    assert "training_config.TrainingArguments.bf16" in str(err.value)
    assert "Tesla V100-SXM2-16GB (compute capability 7.0) has no bfloat16" in str(err.value)


def test_the_cpu_computes_in_float32_and_refuses_fp16():
    precision = choose_precision(None, preferred="bfloat16")
    assert (precision.compute_dtype, precision.bf16, precision.fp16) == ("float32", False, False)
    with pytest.raises(InvalidInput, match="TrainingArguments.fp16"):
        choose_precision(None, fp16=True)


def test_explicit_choices_are_honoured_where_the_device_can():
    assert choose_precision(A100, fp16=True).compute_dtype == "float16"
    assert choose_precision(A100, preferred="float32").compute_dtype == "float32"
    assert choose_precision(T4, preferred="float32").fp16 is False
    assert choose_precision(A100, bf16=False).bf16 is False
    with pytest.raises(InvalidInput, match="both true"):
        choose_precision(A100, bf16=True, fp16=True)
