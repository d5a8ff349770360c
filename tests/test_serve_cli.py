"""`kairo serve` and `kairo-step serve`: their flags, the program run for real, adapters by OCI reference,
and the base model loaded in 4-bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from kairo import cli, exitcodes, step
from kairo.serving.options import AdapterSource, config_from_args
from tests.fixtures.server import running_server, tiny_config

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def serve_args(*argv: str):
    from kairo.steps import serve

    return serve.make_parser().parse_args(list(argv))


def test_bad_flags_exit_2_listing_every_problem(capsys, tmp_path):
    code = step.main(["serve", "--preset", "tiny-llama-tset", "--adapter", "no-equals-sign",
                      "--adapter", f"empty={tmp_path}", "--max-tokens-cap", "0"])
    assert code == exitcodes.BAD_INPUT
    err = capsys.readouterr().err
    assert "4 problems found" in err
    assert "--preset: unknown preset 'tiny-llama-tset' — did you mean 'tiny-llama-test'?" in err
    assert "--adapter[0]: 'no-equals-sign' — expected NAME=DIR or NAME=REF" in err
    assert "--adapter[1]" in err and "holds no adapter_config.json" in err
    assert "--max-tokens-cap: 0 — must be at least 1" in err


def test_an_adapter_may_not_take_the_base_models_name(lora_adapters):
    with pytest.raises(Exception, match="addresses the base model"):
        config_from_args(serve_args("--preset", "tiny-llama-test", "--adapter",
                                    f"tiny-llama-test={lora_adapters['alpha']}"))


def test_kairo_serve_takes_the_same_flags_as_the_step():
    from kairo.steps import serve

    command = next(a for a in cli.make_parser()._subparsers._group_actions[0].choices.items() if a[0] == "serve")[1]
    flags = {o for a in command._actions for o in a.option_strings}
    assert flags == {o for a in serve.make_parser()._actions for o in a.option_strings}


def test_adapters_name_a_folder_or_an_oci_reference(lora_adapters):
    config = config_from_args(serve_args(
        "--preset", "tiny-llama-test", "--adapter", f"mine={lora_adapters['alpha']}",
        "--adapter", "theirs=registry.example.com/team/adapter:20250101-abc",
        "--adapter", "offline=/var/kairo/oci@sha256:" + "a" * 64,
    ))
    assert config.adapters == (
        AdapterSource("mine", path=lora_adapters["alpha"]),
        AdapterSource("theirs", ref="registry.example.com/team/adapter:20250101-abc"),
        AdapterSource("offline", ref="/var/kairo/oci@sha256:" + "a" * 64),
    )
    assert config.default_model == "mine"


def test_oci_scheme_names_an_image_even_where_a_folder_of_that_name_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ghcr.io" / "me" / "adapter:v1").mkdir(parents=True)
    config = config_from_args(serve_args("--preset", "tiny-llama-test", "--adapter", "a=oci://ghcr.io/me/adapter:v1",
                                         "--adapter", "b=oci:///var/kairo/oci@sha256:" + "a" * 64))
    assert config.adapters == (AdapterSource("a", ref="ghcr.io/me/adapter:v1"),
                               AdapterSource("b", ref="/var/kairo/oci@sha256:" + "a" * 64))
    with pytest.raises(Exception, match="oci:// names no image"):
        config_from_args(serve_args("--preset", "tiny-llama-test", "--adapter", "c=oci://"))


def test_the_api_key_comes_from_the_file_else_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KAIRO_API_KEY", "from-env")
    assert config_from_args(serve_args("--preset", "tiny-llama-test")).api_key == "from-env"
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    assert config_from_args(serve_args("--preset", "tiny-llama-test", "--api-key-file", str(key_file))
                            ).api_key == "from-file"


@pytest.mark.slow
def test_kairo_step_serve_serves_until_stopped(tiny_model_dir, lora_adapters, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "kairo.step", "serve", "--preset", "tiny-llama-test",
               "--model-dir", str(tiny_model_dir), "--adapter", f"alpha={lora_adapters['alpha']}",
               "--port", str(port), "--device", "cpu"]
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 — closed below
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "KAIRO_API_KEY": ""})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "not ready in time"
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        answer = httpx.post(f"{url}/chat", json={"prompt": "YOUR QUESTION HERE"}, timeout=60)
        assert answer.status_code == 200 and "Result" in answer.json()
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(30)
        log.close()
    # uvicorn shuts down gracefully, then ends by the signal it caught (as a pod's main process should).
    assert code in (0, -signal.SIGTERM)
    assert "Finished server process" in (tmp_path / "serve.log").read_text()


@pytest.mark.slow
def test_an_adapter_from_an_oci_layout_answers_like_its_folder(tiny_model_dir, lora_adapters, tmp_path):
    from kairo.clients import oci
    from kairo.serving.options import parse_adapter

    layout = oci.write_local_layout(lora_adapters["beta"], tmp_path / "layout")
    source = parse_adapter(f"pulled={layout.ref}")
    assert source.ref == layout.ref
    config = tiny_config(tiny_model_dir, {"folder": lora_adapters["beta"]}, cache_dir=tmp_path / "cache")
    config = config.__class__(**{**config.__dict__, "adapters": (*config.adapters, source)})
    with running_server(config) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        answers = [client.chat.completions.create(model=m, messages=QUESTION, max_tokens=8, temperature=0)
                   .choices[0].message.content for m in ("folder", "pulled")]
    assert answers[0] == answers[1]
    digest = layout.ref.rsplit("@sha256:", 1)[1]  # one folder per digest: a switch pulls beside the served one
    assert (tmp_path / "cache" / "adapters" / f"pulled-{digest[:16]}" / "adapter_config.json").is_file()


@pytest.mark.slow
@pytest.mark.registry
def test_an_adapter_pulled_from_a_registry_is_served(tiny_model_dir, lora_adapters, registry, tmp_path):
    from kairo.clients import oci

    pushed = oci.push_adapter(lora_adapters["alpha"], f"{registry.host}/adapters/alpha:v1", oci.RegistryAccess(plain_http=True))
    config = config_from_args(serve_args(
        "--preset", "tiny-llama-test", "--model-dir", str(tiny_model_dir), "--adapter", f"alpha={pushed.ref}",
        "--plain-http", "--cache-dir", str(tmp_path), "--device", "cpu",
    ))
    with running_server(config) as url:
        models = httpx.get(f"{url}/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["alpha", "tiny-llama-test"]


@pytest.mark.slow
def test_the_base_model_loads_in_4bit_and_serves_adapters(tiny_model_dir, lora_adapters):
    config = tiny_config(tiny_model_dir, lora_adapters, quantize="4bit")
    with running_server(config) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="beta", messages=QUESTION, max_tokens=4, temperature=0)
    assert reply.usage.completion_tokens >= 1 and reply.choices[0].finish_reason in ("stop", "length")


@pytest.mark.slow
def test_a_model_that_cannot_load_ends_the_program_with_exit_2_and_says_why(tiny_model_dir, lora_adapters, tmp_path):
    import shutil

    adapter = shutil.copytree(lora_adapters["alpha"], tmp_path / "other")
    (adapter / "kairo.json").write_text('{"preset": "phi-4", "method": "lora"}')
    proc = subprocess.run([sys.executable, "-m", "kairo.step", "serve", "--preset", "tiny-llama-test",
                           "--model-dir", str(tiny_model_dir), "--adapter", f"mine={adapter}", "--port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == exitcodes.BAD_INPUT
    assert proc.stderr.strip().splitlines()[-1] == (
        "serve: adapter mine was trained on preset 'phi-4', not 'tiny-llama-test' — serve it with --preset phi-4")


@pytest.mark.slow
def test_auto_loads_the_base_as_a_qlora_adapter_was_trained_in_4bit_on_the_cpu_too(tiny_model_dir, lora_adapters,
                                                                                   tmp_path):
    """A QLoRA adapter's deltas were learned against the NF4 base; on the full-precision base the quickstart's
    adapter answered nonsense (it answers "Paris" on the base it was trained on)."""
    import json
    import shutil

    from kairo.serving.models import load_models

    adapter = shutil.copytree(lora_adapters["alpha"], tmp_path / "qlora")
    info = json.loads((adapter / "kairo.json").read_text())
    (adapter / "kairo.json").write_text(json.dumps({**info, "method": "qlora"}))
    trained_4bit = load_models(tiny_config(tiny_model_dir, {"q": adapter}, quantize="auto"))
    trained_full = load_models(tiny_config(tiny_model_dir, {"alpha": lora_adapters["alpha"]}, quantize="auto"))
    assert (trained_4bit.quantized, trained_full.quantized) == (True, False)
