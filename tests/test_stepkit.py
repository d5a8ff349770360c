"""kairo.stepkit: the common flags every step reads the same way, and the boundary that turns failures into exit codes."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from kairo import exitcodes, stepkit
from kairo.clients.oci import CredentialsRefused
from kairo.problems import InvalidInput, Problem


def parse(*argv: str, **flags) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    stepkit.add_common_flags(parser, **flags)
    return parser.parse_args(list(argv))


def test_the_work_volume_is_the_flag_then_kairo_workdir_then_kairo_work(monkeypatch):
    monkeypatch.delenv("KAIRO_WORKDIR", raising=False)
    assert stepkit.workdir(parse(workdir=True)) == Path("/kairo/work")
    monkeypatch.setenv("KAIRO_WORKDIR", "/run/here")
    assert stepkit.workdir(parse(workdir=True)) == Path("/run/here")
    assert stepkit.workdir(parse("--workdir", "/mine", workdir=True)) == Path("/mine")


def test_an_empty_value_counts_as_not_given(monkeypatch):
    monkeypatch.setenv("KAIRO_OUTPUTS", "")
    assert stepkit.outputs(parse("--outputs", "", outputs=True)) == Path("/tmp/outputs")


def test_local_mode_is_the_flag_or_kairo_local(monkeypatch):
    monkeypatch.delenv("KAIRO_LOCAL", raising=False)
    assert not stepkit.is_local(parse(local=True))
    assert stepkit.is_local(parse("--local", local=True))
    monkeypatch.setenv("KAIRO_LOCAL", "1")
    assert stepkit.is_local(parse(local=True))
    assert stepkit.is_local(argparse.Namespace())  # a step without --local still hears KAIRO_LOCAL


def test_a_step_keeps_its_own_help_text():
    parser = argparse.ArgumentParser()
    stepkit.add_common_flags(parser, local="start the server on this machine instead", outputs=True)
    assert "start the server on this machine instead" in parser.format_help()
    assert "--workdir" not in parser.format_help()


def test_bad_input_exits_2_saying_why_after_the_steps_name(capsys):
    def body(args):
        raise InvalidInput([Problem("tuning.method", "'full' — lora or qlora")])

    assert stepkit.run_step("train", body, argparse.Namespace()) == exitcodes.BAD_INPUT
    assert capsys.readouterr().err == "train: 1 problem found\n  - tuning.method: 'full' — lora or qlora\n"


def test_an_unknown_preset_exits_2_naming_close_ones(capsys):
    assert stepkit.run_step("evaluate", lambda args: stepkit.preset("tiny-llama-tset"),
                            argparse.Namespace()) == exitcodes.BAD_INPUT
    assert "tiny-llama-test" in capsys.readouterr().err


def test_a_step_failure_exits_with_the_code_decided_where_it_happened(capsys):
    def body(args):
        raise stepkit.StepFailed("the Kubernetes API did not answer", exitcodes.TRANSIENT)

    assert stepkit.run_step("workspace", body, argparse.Namespace()) == exitcodes.TRANSIENT
    assert capsys.readouterr().err == "workspace: the Kubernetes API did not answer\n"


@pytest.mark.parametrize(("error", "code", "said"), [
    (CredentialsRefused("registry.example refused the credentials"), exitcodes.BAD_INPUT, "refused the credentials"),
    (SystemExit("oras: Issue with request"), exitcodes.TRANSIENT, "failed unexpectedly: SystemExit"),
    (ValueError("a bug"), exitcodes.FAILED, "failed unexpectedly: ValueError: a bug"),
])
def test_a_registry_step_ends_every_failure_with_a_message_and_a_code(capsys, error, code, said):
    def body(args):
        raise error

    assert stepkit.run_step("push", body, argparse.Namespace(), registry=True) == code
    assert said in capsys.readouterr().err


def test_elsewhere_an_unexpected_error_is_a_crash_with_its_traceback():
    def body(args):
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        stepkit.run_step("train", body, argparse.Namespace())
