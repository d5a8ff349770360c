"""`deploy --local`: the inference server started on this machine in the background, and stopped again."""

from __future__ import annotations

import json
import shutil
import threading
import time
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


def completion(url: str, model: str = "phi3") -> str:
    status, answer = post_json(f"{url}/v1/completions", {"model": model, "prompt": "The capital of France is",
                                                         "max_tokens": 6, "temperature": 0})
    assert status == 200
    return answer["choices"][0]["text"]


def health(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/health", timeout=10) as answer:
        return json.load(answer)


class ClientLoop:
    """Requests one after another, from a few threads, until stopped (at most `limit` each)."""

    def __init__(self, url: str, threads: int = 3, limit: int = 2000, model: str = "phi3"):
        self.url, self.limit, self.model = url, limit, model
        self.answers: list[str] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop) for _ in range(threads)]

    def _loop(self) -> None:
        for _ in range(self.limit):
            if self.stop.is_set():
                return
            try:
                self.answers.append(completion(self.url, self.model))
            except Exception as err:  # every kind of failure counts
                self.failures.append(repr(err))

    def __enter__(self) -> ClientLoop:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def second_ref(n: str) -> str:
    return "127.0.0.1:5000/phi3@sha256:" + n * 64


@pytest.mark.slow
def test_a_retrain_that_deploys_switches_the_running_server_without_a_failed_request(
        tmp_path, tiny_model_dir, lora_adapters):
    workdir = tmp_path / "work"
    shutil.copytree(tiny_model_dir, workdir / "model" / "tiny-llama-test")
    shutil.copytree(lora_adapters["alpha"], workdir / "adapter")
    try:
        assert run_local(workdir, "--timeout", "240") == exitcodes.OK
        url = (workdir / "out" / "service-url").read_text()
        pid = local_server.running(workdir)
        first = completion(url)
        # The seed's call, with Kaito's body, on the local endpoint.
        status, answer = post_json(f"{url}/chat", {"prompt": "What is the capital of France?",
                                                   "generate_kwargs": {"max_new_tokens": 4}})
        assert status == 200 and answer
        assert health(url)["adapters"] == {"phi3": "sha256:" + "1" * 64}
        with urllib.request.urlopen(f"{url}/v1/models", timeout=10) as models:
            assert "phi3" in {m["id"] for m in json.load(models)["data"]}
        # The retrain: training rewrites adapter/ while the first adapter serves, then deploy runs again.
        shutil.rmtree(workdir / "adapter")
        shutil.copytree(lora_adapters["beta"], workdir / "adapter")
        with ClientLoop(url) as clients:
            time.sleep(0.5)
            assert run_local(workdir, "--timeout", "240", "--adapter-ref", second_ref("2")) == exitcodes.OK
            time.sleep(0.5)
        assert clients.failures == []
        assert clients.answers[0] == first and clients.answers[-1] != first
        assert set(clients.answers) == {first, clients.answers[-1]}  # the old adapter's answer, then the new one's
        assert local_server.running(workdir) == pid  # the same server: no restart
        assert (workdir / "out" / "service-url").read_text() == url
        assert health(url)["adapters"] == {"phi3": "sha256:" + "2" * 64}
        declared = json.loads(local_server.adapters_path(workdir).read_text())["adapters"]
        assert [a["digest"] for a in declared] == ["sha256:" + "2" * 64]
        record = local_server.read_deployed(workdir)
        assert [e["digest"] for e in record["history"]] == ["sha256:" + "2" * 64, "sha256:" + "1" * 64]
    finally:
        stopped = local_server.stop(workdir)
    assert stopped and not local_server.pid_path(workdir).exists()
    with pytest.raises(urllib.error.URLError):  # stopped: nothing answers there any more
        urllib.request.urlopen(f"{url}/health", timeout=5)


@pytest.mark.slow
def test_a_failed_switch_fails_the_deploy_and_the_old_adapter_keeps_serving(
        tmp_path, tiny_model_dir, lora_adapters, capsys):
    from safetensors.torch import load_file, save_file

    workdir = tmp_path / "work"
    shutil.copytree(tiny_model_dir, workdir / "model" / "tiny-llama-test")
    shutil.copytree(lora_adapters["alpha"], workdir / "adapter")
    try:
        assert run_local(workdir, "--timeout", "240") == exitcodes.OK
        url = (workdir / "out" / "service-url").read_text()
        first = completion(url)
        weights = workdir / "adapter" / "adapter_model.safetensors"  # loads, but answers NaN
        save_file({k: v * float("nan") for k, v in load_file(weights).items()}, weights)
        with ClientLoop(url) as clients:
            assert run_local(workdir, "--timeout", "240", "--adapter-ref", second_ref("3")) == exitcodes.FAILED
        err = capsys.readouterr().err
        assert "did not switch phi3 to sha256:" + "3" * 64 in err and "does not answer" in err
        assert "the adapter deployed before keeps serving" in err
        assert clients.failures == [] and set(clients.answers) == {first}
        assert health(url)["adapters"] == {"phi3": "sha256:" + "1" * 64} and completion(url) == first
        declared = json.loads(local_server.adapters_path(workdir).read_text())["adapters"]
        assert [a["digest"] for a in declared] == ["sha256:" + "1" * 64]  # declared again: a restart serves it too
        assert local_server.read_deployed(workdir)["current"]["digest"] == "sha256:" + "1" * 64
    finally:
        local_server.stop(workdir)


@pytest.mark.slow
def test_a_new_base_model_restarts_the_server(tmp_path, tiny_model_dir, lora_adapters):
    workdir = tmp_path / "work"
    shutil.copytree(lora_adapters["alpha"], workdir / "adapter")
    try:
        assert run_local(workdir, "--timeout", "240") == exitcodes.OK  # the preset's own tiny model, built
        pid = local_server.running(workdir)
        shutil.copytree(tiny_model_dir, workdir / "model" / "tiny-llama-test")  # fetch-model ran: another base
        assert run_local(workdir, "--timeout", "240") == exitcodes.OK
        assert local_server.running(workdir) not in (None, pid)
    finally:
        local_server.stop(workdir)


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


def run_inference_local(workdir: Path, *adapters: str) -> int:
    return deploy.main(["--local", "--workspace", "serve-two", "--preset", "tiny-llama-test", *adapters,
                        "--timeout", "240", "--workdir", str(workdir), "--outputs", str(workdir / "out")])


@pytest.mark.slow
def test_an_inference_workspaces_new_digests_and_strengths_switch_the_running_server(
        tmp_path, tiny_model_dir, lora_adapters):
    workdir = tmp_path / "work"
    shutil.copytree(tiny_model_dir, workdir / "model" / "tiny-llama-test")
    for name, source in (("coder", "alpha"), ("writer", "beta")):  # where their pull tasks put them
        shutil.copytree(lora_adapters[source], workdir / "adapters" / name)
    coder = "127.0.0.1:5000/coder@sha256:"
    writer = "127.0.0.1:5000/writer@sha256:" + "2" * 64
    try:
        assert run_inference_local(workdir, "--adapter", f"coder={coder}{'1' * 64}",
                                   "--adapter", f"writer={writer}") == exitcodes.OK
        url = (workdir / "out" / "service-url").read_text()
        pid = local_server.running(workdir)
        first = completion(url, "coder")
        # the next pull of coder: other weights, another digest; writer is dropped
        shutil.rmtree(workdir / "adapters" / "coder")
        shutil.copytree(lora_adapters["beta"], workdir / "adapters" / "coder")
        with ClientLoop(url, model="coder") as clients:
            time.sleep(0.5)
            assert run_inference_local(workdir, "--adapter", f"coder={coder}{'3' * 64}") == exitcodes.OK
            time.sleep(0.5)
        assert clients.failures == []
        assert clients.answers[0] == first and clients.answers[-1] != first
        assert local_server.running(workdir) == pid  # switched in place
        assert health(url)["adapters"] == {"coder": "sha256:" + "3" * 64}
        # the first strength: combined_adapter is served from start or not at all, so the server starts again
        assert run_inference_local(workdir, "--adapter", f"coder={coder}{'3' * 64}",
                                   "--strength", "coder=0.5") == exitcodes.OK
        assert local_server.running(workdir) != pid
        url, pid = (workdir / "out" / "service-url").read_text(), local_server.running(workdir)
        combined = health(url)["adapters"]["combined_adapter"]
        before = completion(url, "combined_adapter")
        # another strength: weighed again in place, the same server
        with ClientLoop(url, model="combined_adapter") as clients:
            time.sleep(0.5)
            assert run_inference_local(workdir, "--adapter", f"coder={coder}{'3' * 64}",
                                       "--strength", "coder=0.1") == exitcodes.OK
            time.sleep(0.5)
        assert clients.failures == [] and local_server.running(workdir) == pid
        assert health(url)["adapters"]["combined_adapter"] not in ("", combined)
        assert completion(url, "combined_adapter") != before
    finally:
        local_server.stop(workdir)
