"""`deploy --local`: the inference server started on this machine in the background, and stopped again."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kairo import exitcodes
from kairo.local import server as local_server
from kairo.steps import deploy, deployed


def run_local(workdir: Path, *extra: str) -> int:
    return deploy.main(["--local", "--workspace", "phi3", "--preset", "tiny-llama-test",
                        "--adapter-ref", "127.0.0.1:5000/phi3@sha256:" + "1" * 64, "--eval-loss", "1.2",
                        "--workdir", str(workdir), "--outputs", str(workdir / "out"), *extra])


def test_local_deploy_needs_the_trained_adapter(tmp_path, capsys):
    assert run_local(tmp_path) == exitcodes.BAD_INPUT
    assert f"no adapter at {tmp_path.resolve() / 'adapter'}" in capsys.readouterr().err


def test_a_server_that_cannot_start_fails_the_deploy_with_the_end_of_its_log(tmp_path, capsys):
    (tmp_path / "adapter").mkdir()  # empty: no adapter a server could load
    assert run_local(tmp_path, "--timeout", "120") == exitcodes.FAILED
    assert "the end of its log" in capsys.readouterr().err
    assert not local_server.pid_path(tmp_path).exists()
    assert local_server.read_deployed(tmp_path) is None
    assert not (tmp_path / "out" / "service-url").exists()


def test_deployed_reads_the_local_record(tmp_path):
    local_server.write_deployed(tmp_path, {"current": {"ref": "oci-layout:phi3@sha256:" + "2" * 64,
                                                       "dataset_digest": "sha256:" + "d" * 64, "eval_loss": "0.9"}})
    out = tmp_path / "out"
    assert deployed.main(["--local", "--workspace", "phi3", "--workdir", str(tmp_path), "--outputs", str(out)]) == 0
    assert (out / "eval-loss").read_text() == "0.9"
    assert (out / "adapter-ref").read_text() == "oci-layout:phi3@sha256:" + "2" * 64


def post_json(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return answer.status, json.load(answer)


@pytest.mark.slow
def test_local_deploy_serves_the_adapter_in_the_background_until_stopped(tmp_path, tiny_model_dir, lora_adapters):
    workdir = tmp_path / "work"
    shutil.copytree(tiny_model_dir, workdir / "model" / "tiny-llama-test")
    shutil.copytree(lora_adapters["alpha"], workdir / "adapter")
    try:
        assert run_local(workdir, "--timeout", "240") == exitcodes.OK
        url = (workdir / "out" / "service-url").read_text()
        first_pid = int(local_server.pid_path(workdir).read_text())
        # The seed's call, with Kaito's body, on the local endpoint.
        status, answer = post_json(f"{url}/chat", {"prompt": "What is the capital of France?",
                                                   "generate_kwargs": {"max_new_tokens": 4}})
        assert status == 200 and answer
        with urllib.request.urlopen(f"{url}/v1/models", timeout=10) as models:
            assert "phi3" in {m["id"] for m in json.load(models)["data"]}
        record = local_server.read_deployed(workdir)
        assert record["url"] == url and record["current"]["eval_loss"] == "1.2"
        # Deploying again replaces the server the first deploy started.
        assert run_local(workdir, "--timeout", "240") == exitcodes.OK
        assert int(local_server.pid_path(workdir).read_text()) != first_pid
        with pytest.raises(urllib.error.URLError):  # the first server is gone
            urllib.request.urlopen(f"{url}/health", timeout=5)
        assert (workdir / "out" / "service-url").read_text() != url
    finally:
        stopped = local_server.stop(workdir)
    assert stopped and not local_server.pid_path(workdir).exists()


def test_a_named_api_key_secret_whose_key_is_not_here_stops_the_local_deploy(tmp_path, capsys):
    (tmp_path / "adapter").mkdir()
    assert run_local(tmp_path, "--api-key-secret", "serve-key",
                     "--api-key-file", str(tmp_path / "missing")) == exitcodes.BAD_INPUT
    assert "--secret serve-key=FOLDER" in capsys.readouterr().err
    assert not local_server.pid_path(tmp_path).exists()


@pytest.mark.slow
def test_the_local_server_requires_the_api_key_the_workspace_names(tmp_path, tiny_model_dir, lora_adapters):
    workdir = tmp_path / "work"
    shutil.copytree(tiny_model_dir, workdir / "model" / "tiny-llama-test")
    shutil.copytree(lora_adapters["alpha"], workdir / "adapter")
    key = tmp_path / "api-key"
    key.write_text("s3cret-key\n")
    try:
        assert run_local(workdir, "--timeout", "240", "--api-key-secret", "serve-key",
                         "--api-key-file", str(key)) == exitcodes.OK
        url = (workdir / "out" / "service-url").read_text()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/v1/models", timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(f"{url}/v1/models", headers={"Authorization": "Bearer s3cret-key"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
    finally:
        local_server.stop(workdir)
