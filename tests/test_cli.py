"""The user's first contact: `kairo validate`, `kairo presets`, `kairo instance-types`."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from kairo.cli import main


def test_validate_a_valid_file_exits_0(examples, capsys):
    assert main(["validate", str(examples / "tuning-phi-3.yaml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_validate_an_invalid_file_exits_2_with_every_problem_on_stderr(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: {name: Bad}\n"
        "resource: {instanceType: Standard_NC6s_v3, labelSelector: {matchLabels: {a: b}}}\n"
        "tuning: {preset: {name: nope}, method: qlora, input: {urls: ['ftp://x/y']}, output: {image: r.io/a:1}}\n"
    )
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    for path in ("metadata.name", "tuning.preset.name", "tuning.input.urls[0]", "tuning.output.imagePushSecret"):
        assert path in err


def test_validate_json_output(examples, capsys):
    assert main(["validate", "--json", str(examples / "tuning-phi-3.yaml")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report[0]["valid"] is True and len(report[0]["warnings"]) == 2


def test_validate_a_missing_file_is_an_input_error(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_presets_list_and_show(capsys):
    assert main(["presets"]) == 0
    assert "phi-3-mini-128k-instruct" in capsys.readouterr().out
    assert main(["presets", "show", "phi-4", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["source"]["huggingface"]["repo"] == "microsoft/phi-4" and shown["fits_on"]["qlora"]


def test_presets_show_an_unknown_name_suggests(capsys):
    assert main(["presets", "show", "phi4"]) == 2
    assert "phi-4" in capsys.readouterr().err


def test_instance_types_json_and_filter(capsys):
    assert main(["instance-types", "--json", "--fits", "qwen2.5-coder-32b-instruct", "--method", "lora"]) == 0
    names = [t["name"] for t in json.loads(capsys.readouterr().out)]
    assert "Standard_NC6s_v3" not in names and "Standard_ND96isr_H100_v5" in names


def test_console_scripts_are_installed():
    out = subprocess.run([sys.executable, "-m", "kairo.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("kairo ")


def test_kairo_step_refuses_an_unknown_step(capsys):
    from kairo.step import main as step_main

    assert step_main(["no-such-step"]) == 2
    assert "unknown step" in capsys.readouterr().err


def test_a_reader_that_leaves_early_gets_no_traceback():
    """`kairo instance-types | head -1`: the closed pipe ends the command quietly."""
    proc = subprocess.Popen([sys.executable, "-m", "kairo.cli", "instance-types"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_the_quickstart_renders_with_local_and_says_why_without(examples, capsys):
    """The quickstart pushes to a registry on this machine: fine for `kairo run --local`, not for a cluster."""
    assert main(["render", "--local", str(examples / "quickstart.yaml")]) == 0
    kinds = [d["kind"] for d in yaml.safe_load_all(capsys.readouterr().out)]
    assert kinds[-1] == "Workflow" and set(kinds[:-1]) == {"ConfigMap"}
    assert main(["render", str(examples / "quickstart.yaml")]) == 2
    err = capsys.readouterr().err
    assert "tuning.output.imagePushSecret" in err and "validate with --local" in err
