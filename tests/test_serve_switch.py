"""Switching the served adapter without a restart: the watched adapters file (the mounted ConfigMap), and
vLLM's admin routes. The new adapter loads beside the old, is checked, then serves new requests; requests
already running finish on the old one; a failed switch leaves the old one serving."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from kairo.manifests.adapters import DeclaredAdapter, adapters_document
from tests.fixtures.server import running_server, started_server, tiny_config

pytestmark = pytest.mark.slow

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
DIGEST_BAD = "sha256:" + "e" * 64
BODY = {"model": "phi3", "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0}


def declare(folder: Path, adapter: Path, digest: str) -> None:
    """Write the adapters document the way the kubelet updates a ConfigMap volume: a new `..data`, one swap."""
    version = folder / f"..{time.monotonic_ns()}"
    version.mkdir(parents=True)
    (version / "adapters.json").write_text(adapters_document([DeclaredAdapter("phi3", path=str(adapter),
                                                                              digest=digest)]))
    link = folder / "..data_tmp"
    link.symlink_to(version.name)
    os.replace(link, folder / "..data")
    if not (folder / "adapters.json").is_symlink():
        (folder / "adapters.json").symlink_to("..data/adapters.json")


def health(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=10).json()


def wait_for(url: str, check, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        said = health(url)
        if check(said):
            return said
        assert time.monotonic() < deadline, f"the server never got there: {said}"
        time.sleep(0.05)


def text(url: str, body: dict = BODY, **headers: str) -> str:
    answer = httpx.post(f"{url}/v1/completions", json=body, headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["choices"][0]["text"]


@pytest.fixture(scope="module")
def answers(tiny_model_dir, lora_adapters) -> dict[str, str]:
    """What alpha and beta answer BODY, each served alone."""
    out = {}
    for name in ("alpha", "beta"):
        with running_server(tiny_config(tiny_model_dir, {"phi3": lora_adapters[name]})) as url:
            out[name] = text(url)
    assert out["alpha"] != out["beta"]
    return out


@pytest.fixture
def nan_adapter(lora_adapters, tmp_path) -> Path:
    """beta with its weights made NaN: it loads, but cannot answer."""
    from safetensors.torch import load_file, save_file

    bad = shutil.copytree(lora_adapters["beta"], tmp_path / "nan")
    weights = load_file(bad / "adapter_model.safetensors")
    save_file({k: v * float("nan") for k, v in weights.items()}, bad / "adapter_model.safetensors")
    return bad


def watched_config(tiny_model_dir, folder: Path, **overrides):
    """A config serving what `folder`/adapters.json declares, reading it again every 50 ms."""
    from kairo.serving.options import adapters_from_file

    path = folder / "adapters.json"
    config = tiny_config(tiny_model_dir, adapters_file=path, watch_interval_s=0.05, **overrides)
    return dataclasses.replace(config, adapters=tuple(adapters_from_file(path)))


def test_a_newly_declared_adapter_serves_without_a_restart_and_no_request_fails(
        tiny_model_dir, lora_adapters, answers, tmp_path):
    declare(tmp_path, lora_adapters["alpha"], DIGEST_A)
    with running_server(watched_config(tiny_model_dir, tmp_path)) as url:
        assert health(url)["adapters"] == {"phi3": DIGEST_A}
        assert text(url) == answers["alpha"]
        seen: list[str] = []
        failures: list[str] = []
        stop = threading.Event()

        def client_loop() -> None:  # a bounded loop: until told, at most 500 requests
            for _ in range(500):
                if stop.is_set():
                    return
                answer = httpx.post(f"{url}/v1/completions", json=BODY, timeout=60)
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code}: {answer.text}")
                else:
                    seen.append(answer.json()["choices"][0]["text"])

        clients = [threading.Thread(target=client_loop) for _ in range(3)]
        for client in clients:
            client.start()
        time.sleep(0.3)
        declare(tmp_path, lora_adapters["beta"], DIGEST_B)
        wait_for(url, lambda h: h["adapters"] == {"phi3": DIGEST_B})
        time.sleep(0.3)
        stop.set()
        for client in clients:
            client.join(60)
        assert failures == []
        assert set(seen) == {answers["alpha"], answers["beta"]}  # served before and after, nothing else
        assert seen[-1] == answers["beta"] and text(url) == answers["beta"]
        models = httpx.get(f"{url}/v1/models").json()["data"]
        assert {m["id"]: m.get("digest") for m in models} == {"phi3": DIGEST_B, "tiny-llama-test": None}


def test_the_old_adapter_is_unloaded_once_the_switch_is_done(tiny_model_dir, lora_adapters, tmp_path):
    declare(tmp_path, lora_adapters["alpha"], DIGEST_A)
    with started_server(watched_config(tiny_model_dir, tmp_path)) as server:
        wait_for(server.url, lambda h: h.get("adapters") == {"phi3": DIGEST_A})
        declare(tmp_path, lora_adapters["beta"], DIGEST_B)
        wait_for(server.url, lambda h: h["adapters"] == {"phi3": DIGEST_B})
        models = server.app.state.server.models
        deadline = time.monotonic() + 10
        while len(models.loaded_slots) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert models.loaded_slots == {models.slots["phi3"]}


def test_requests_sent_before_the_switch_finish_on_the_old_adapter(tiny_model_dir, lora_adapters, tmp_path):
    from kairo.serving.models import load_models

    running_body = {**BODY, "max_tokens": 30, "min_tokens": 30}
    queued_body = {**BODY, "max_tokens": 29, "min_tokens": 29}  # other settings: it waits for a batch of its own

    def slow_load(config):
        models = load_models(config)
        models.model.get_input_embeddings().register_forward_pre_hook(lambda *args: time.sleep(0.03))
        return models

    with running_server(tiny_config(tiny_model_dir, {"phi3": lora_adapters["alpha"]})) as url:
        old = [text(url, running_body), text(url, queued_body)]
    with running_server(tiny_config(tiny_model_dir, {"phi3": lora_adapters["beta"]})) as url:
        new = text(url, queued_body)
    assert new != old[1]
    declare(tmp_path, lora_adapters["alpha"], DIGEST_A)
    with started_server(watched_config(tiny_model_dir, tmp_path), load=slow_load) as server:
        wait_for(server.url, lambda h: h.get("adapters") == {"phi3": DIGEST_A})

        async def during_switch() -> tuple[list[str], str]:
            async with httpx.AsyncClient(timeout=60) as http:
                sent = [asyncio.create_task(http.post(f"{server.url}/v1/completions", json=running_body))]
                await asyncio.sleep(0.2)
                sent.append(asyncio.create_task(http.post(f"{server.url}/v1/completions", json=queued_body)))
                await asyncio.sleep(0.1)
                declare(tmp_path, lora_adapters["beta"], DIGEST_B)
                while (await http.get(f"{server.url}/health")).json()["adapters"] != {"phi3": DIGEST_B}:
                    await asyncio.sleep(0.02)
                after = await http.post(f"{server.url}/v1/completions", json=queued_body)
                return [(await s).json()["choices"][0]["text"] for s in sent], after.json()["choices"][0]["text"]

        before, after = asyncio.run(during_switch())
    assert before == old  # the running one and the queued one, both on the adapter they were sent to
    assert after == new


def test_a_failed_switch_keeps_the_old_adapter_serving_and_says_why(
        tiny_model_dir, lora_adapters, answers, nan_adapter, tmp_path):
    declare(tmp_path, lora_adapters["alpha"], DIGEST_A)
    with running_server(watched_config(tiny_model_dir, tmp_path)) as url:
        declare(tmp_path, nan_adapter, DIGEST_BAD)
        said = wait_for(url, lambda h: h["switch"].get("error"))
        assert said["adapters"] == {"phi3": DIGEST_A}
        assert said["switch"]["wanted"] == {"phi3": DIGEST_BAD} and "does not answer" in said["switch"]["error"]
        assert text(url) == answers["alpha"]
        declare(tmp_path, lora_adapters["beta"], DIGEST_B)  # the next declaration switches as usual
        wait_for(url, lambda h: h["adapters"] == {"phi3": DIGEST_B} and not h["switch"].get("error"))


def test_an_unreadable_adapters_file_switches_nothing(tiny_model_dir, lora_adapters, answers, tmp_path):
    declare(tmp_path, lora_adapters["alpha"], DIGEST_A)
    with running_server(watched_config(tiny_model_dir, tmp_path)) as url:
        version = tmp_path / "..broken"
        version.mkdir()
        (version / "adapters.json").write_text('{"adapters": [{"ref": "x"}]}')
        os.replace(tmp_path / "..data", tmp_path / "..old")
        (tmp_path / "..data").symlink_to(version.name)
        said = wait_for(url, lambda h: h["switch"].get("error"))
        assert "needs a name" in said["switch"]["error"] and said["adapters"] == {"phi3": DIGEST_A}
        assert text(url) == answers["alpha"]


# -- vLLM's admin routes --------------------------------------------------------------------------------


def test_the_admin_routes_are_off_without_an_api_key(adapter_server, lora_adapters):
    answer = httpx.post(f"{adapter_server}/v1/load_lora_adapter",
                        json={"lora_name": "gamma", "lora_path": str(lora_adapters["beta"])})
    assert answer.status_code == 404 and "API key" in answer.json()["error"]["message"]


def test_the_admin_routes_load_switch_and_unload_with_the_api_key(tiny_model_dir, lora_adapters, answers):
    auth = {"Authorization": "Bearer sesame"}
    config = tiny_config(tiny_model_dir, {"phi3": lora_adapters["alpha"]}, api_key="sesame")
    with running_server(config) as url:
        load = {"lora_name": "phi3", "lora_path": str(lora_adapters["beta"])}
        assert httpx.post(f"{url}/v1/load_lora_adapter", json=load).status_code == 401
        again = httpx.post(f"{url}/v1/load_lora_adapter", json=load, headers=auth)
        assert again.status_code == 400 and "load_inplace" in again.json()["error"]["message"]
        switched = httpx.post(f"{url}/v1/load_lora_adapter", json={**load, "load_inplace": True}, headers=auth)
        assert switched.status_code == 200 and "phi3" in switched.text
        assert text(url, **auth) == answers["beta"]
        added = httpx.post(f"{url}/v1/load_lora_adapter", headers=auth,
                           json={"lora_name": "gamma", "lora_path": str(lora_adapters["alpha"])})
        assert added.status_code == 200
        assert text(url, {**BODY, "model": "gamma"}, **auth) == answers["alpha"]
        gone = httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "gamma"}, headers=auth)
        assert gone.status_code == 200
        missing = httpx.post(f"{url}/v1/completions", json={**BODY, "model": "gamma"}, headers=auth)
        assert missing.status_code == 404
        assert httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "gamma"}, headers=auth).status_code == 404


def test_the_admin_route_refuses_an_adapter_that_cannot_answer(tiny_model_dir, lora_adapters, answers, nan_adapter):
    auth = {"Authorization": "Bearer sesame"}
    config = tiny_config(tiny_model_dir, {"phi3": lora_adapters["alpha"]}, api_key="sesame")
    with running_server(config) as url:
        answer = httpx.post(f"{url}/v1/load_lora_adapter", headers=auth,
                            json={"lora_name": "phi3", "lora_path": str(nan_adapter), "load_inplace": True})
        assert answer.status_code == 400 and "does not answer" in answer.json()["error"]["message"]
        assert text(url, **auth) == answers["alpha"]


def test_the_adapters_file_is_read_at_start(tiny_model_dir, lora_adapters, answers, tmp_path):
    from kairo.serving.options import add_arguments, config_from_args

    declare(tmp_path, lora_adapters["beta"], DIGEST_B)
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--preset", "tiny-llama-test", "--model-dir", str(tiny_model_dir),
                                                 "--adapters-file", str(tmp_path / "adapters.json")]))
    assert [(a.name, a.digest) for a in config.adapters] == [("phi3", DIGEST_B)]
    assert json.loads((tmp_path / "adapters.json").read_text())["adapters"][0]["digest"] == DIGEST_B


def declare_names(folder: Path, lora_adapters, names: list[str]) -> None:
    """Declare phi3 (alpha's weights) and gamma (beta's), those of them in `names`, as the kubelet would."""
    version = folder / f"..{time.monotonic_ns()}"
    version.mkdir()
    (version / "adapters.json").write_text(adapters_document([
        DeclaredAdapter(n, path=str(lora_adapters[a]), digest=d)
        for n, a, d in (("phi3", "alpha", DIGEST_A), ("gamma", "beta", DIGEST_B)) if n in names]))
    link = folder / "..data_tmp"
    link.symlink_to(version.name)
    os.replace(link, folder / "..data")
    if not (folder / "adapters.json").is_symlink():
        (folder / "adapters.json").symlink_to("..data/adapters.json")


def test_a_name_the_file_no_longer_declares_stops_being_served(tiny_model_dir, lora_adapters, tmp_path):
    def declare_both(names: list[str]) -> None:
        declare_names(tmp_path, lora_adapters, names)

    declare_both(["phi3", "gamma"])
    with running_server(watched_config(tiny_model_dir, tmp_path)) as url:
        assert health(url)["adapters"] == {"phi3": DIGEST_A, "gamma": DIGEST_B}
        declare_both(["phi3"])
        wait_for(url, lambda h: h["adapters"] == {"phi3": DIGEST_A})
        assert httpx.post(f"{url}/v1/completions", json={**BODY, "model": "gamma"}).status_code == 404
        assert text(url) != ""


def test_a_name_dropped_while_the_model_loads_is_not_served(tiny_model_dir, lora_adapters, tmp_path):
    # The server starts from the file as it was; the kubelet swaps in a new version before the watcher's first
    # read (the model may take minutes to load): the dropped name must still go.
    declare_names(tmp_path, lora_adapters, ["phi3", "gamma"])
    config = watched_config(tiny_model_dir, tmp_path)
    declare_names(tmp_path, lora_adapters, ["phi3"])
    with running_server(config) as url:
        wait_for(url, lambda h: h["adapters"] == {"phi3": DIGEST_A})
        assert httpx.post(f"{url}/v1/completions", json={**BODY, "model": "gamma"}).status_code == 404


def test_an_adapter_flag_beside_the_file_is_not_dropped_by_it(tiny_model_dir, lora_adapters, tmp_path):
    # --adapter gamma=DIR beside --adapters-file declaring phi3: a change of the file leaves gamma alone.
    from kairo.serving.options import AdapterSource

    declare_names(tmp_path, lora_adapters, ["phi3"])
    config = watched_config(tiny_model_dir, tmp_path)
    config = dataclasses.replace(config, adapters=(*config.adapters, AdapterSource("gamma", path=lora_adapters["beta"],
                                                                                   digest=DIGEST_B)))
    with running_server(config) as url:
        declare(tmp_path, lora_adapters["beta"], DIGEST_B)  # phi3 now beta's weights
        wait_for(url, lambda h: h["adapters"] == {"phi3": DIGEST_B, "gamma": DIGEST_B})
        assert text(url, {**BODY, "model": "gamma"}) != ""


def test_a_plain_adapter_replaces_one_that_trains_a_saved_module(tiny_model_dir, lora_adapters, answers, tmp_path):
    """The check of the new slot runs it as its own batch would (set_adapter): PEFT's adapter_names= path raised
    KeyError in the lm_head copy the old adapter made, which the new slot has none of."""
    from tests.fixtures.server import build_lora_adapter

    saved = build_lora_adapter(tiny_model_dir, tmp_path / "saved", 11, modules_to_save=["lm_head"])
    folder = tmp_path / "declared"
    declare(folder, saved, DIGEST_BAD)
    with running_server(watched_config(tiny_model_dir, folder)) as url:
        declare(folder, lora_adapters["alpha"], DIGEST_A)
        said = wait_for(url, lambda h: h["adapters"] == {"phi3": DIGEST_A} or h["switch"].get("error"))
        assert not said["switch"].get("error") and text(url) == answers["alpha"]
