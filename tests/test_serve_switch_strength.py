"""Strengths switched in place: the adapters file carries each adapter's strength, and a new strength (or a new
digest of a weighed adapter) makes combined_adapter again in a new slot beside the old one, checked, then
pointed at; requests running finish on the old one, which is retired once unused."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from kairo.manifests.adapters import DeclaredAdapter, adapters_document, combination_digest
from kairo.serving.options import COMBINED_ADAPTER
from tests.fixtures.server import running_server, started_server, tiny_config
from tests.test_serve_switch import health, wait_for, watched_config

pytestmark = pytest.mark.slow

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
PROMPT = {"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0}


def declare(folder: Path, lora_adapters, strengths: dict[str, float | None]) -> None:
    """The adapters document for alpha and beta with these strengths, swapped in as the kubelet does."""
    version = folder / f"..{time.monotonic_ns()}"
    version.mkdir(parents=True)
    declared = [DeclaredAdapter(n, path=str(lora_adapters[n]), digest=d, strength=strengths.get(n))
                for n, d in (("alpha", DIGEST_A), ("beta", DIGEST_B))]
    (version / "adapters.json").write_text(adapters_document(declared))
    link = folder / "..data_tmp"
    link.symlink_to(version.name)
    os.replace(link, folder / "..data")
    if not (folder / "adapters.json").is_symlink():
        (folder / "adapters.json").symlink_to("..data/adapters.json")


def digest_of(weights: dict[str, float]) -> str:
    return combination_digest({"alpha": (DIGEST_A, weights["alpha"]), "beta": (DIGEST_B, weights["beta"])})


def ask(url: str, model: str = COMBINED_ADAPTER) -> str:
    answer = httpx.post(f"{url}/v1/completions", json={"model": model, **PROMPT}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["choices"][0]["text"]


def fresh(tiny_model_dir, lora_adapters, weights: dict[str, float]) -> dict[str, str]:
    """What a server started with these strengths answers, per model."""
    config = tiny_config(tiny_model_dir, {n: lora_adapters[n] for n in ("alpha", "beta")},
                         strengths=tuple(weights.items()))
    with running_server(config) as url:
        return {m: ask(url, m) for m in (COMBINED_ADAPTER, "alpha", "beta")}


OLD = {"alpha": 0.9, "beta": 0.1}
NEW = {"alpha": 0.1, "beta": 1.0}


@pytest.fixture(scope="module")
def before_after(tiny_model_dir, lora_adapters) -> tuple[dict[str, str], dict[str, str]]:
    old, new = fresh(tiny_model_dir, lora_adapters, OLD), fresh(tiny_model_dir, lora_adapters, NEW)
    assert old[COMBINED_ADAPTER] != new[COMBINED_ADAPTER]  # else the test could not tell them apart
    return old, new


def test_a_strength_change_switches_combined_adapter_in_place_and_no_request_fails(
        tiny_model_dir, lora_adapters, before_after, tmp_path):
    old, new = before_after
    declare(tmp_path, lora_adapters, OLD)
    with started_server(watched_config(tiny_model_dir, tmp_path)) as started:
        url = started.url
        wait_for(url, lambda h: h.get("ready") or h.get("adapters"), timeout=120)
        assert health(url)["adapters"] == {COMBINED_ADAPTER: digest_of(OLD), "alpha": DIGEST_A, "beta": DIGEST_B}
        assert ask(url) == old[COMBINED_ADAPTER]
        models = started.app.state.server.models
        seen: list[str] = []
        failures: list[str] = []
        stop = threading.Event()

        def client_loop(model: str) -> None:  # bounded: until told, at most 500 requests
            for _ in range(500):
                if stop.is_set():
                    return
                answer = httpx.post(f"{url}/v1/completions", json={"model": model, **PROMPT}, timeout=60)
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code}: {answer.text}")
                elif model == COMBINED_ADAPTER:
                    seen.append(answer.json()["choices"][0]["text"])
                elif answer.json()["choices"][0]["text"] != old[model]:
                    failures.append(f"{model} answered {answer.json()['choices'][0]['text']!r}")

        # two on the combination, one on alpha: combined rows share batches with alpha's (stacked LoRA)
        clients = [threading.Thread(target=client_loop, args=(m,)) for m in (COMBINED_ADAPTER, COMBINED_ADAPTER,
                                                                             "alpha")]
        for client in clients:
            client.start()
        time.sleep(0.3)
        declare(tmp_path, lora_adapters, NEW)
        said = wait_for(url, lambda h: h["adapters"][COMBINED_ADAPTER] == digest_of(NEW))
        assert said["adapters"]["alpha"] == DIGEST_A and not said["switch"].get("error")
        time.sleep(0.3)
        stop.set()
        for client in clients:
            client.join(60)
        assert failures == []
        assert set(seen) <= {old[COMBINED_ADAPTER], new[COMBINED_ADAPTER]} and seen[-1] == new[COMBINED_ADAPTER]
        # greedy: the same answers as a server started with the new strengths
        assert {m: ask(url, m) for m in (COMBINED_ADAPTER, "alpha", "beta")} == new
        deadline = time.monotonic() + 30  # the first combination's slot is retired once no row uses it
        while COMBINED_ADAPTER in models.loaded_slots and time.monotonic() < deadline:
            time.sleep(0.05)
        slot = models.adapter_for(COMBINED_ADAPTER)
        assert slot != COMBINED_ADAPTER and models.loaded_slots == {"alpha", "beta", slot}
        # the new combination is an ordinary LoRA slot: the stacks mix it with the others
        assert slot in models.stacked.covered(models.model)
        infos = {m["id"]: m for m in httpx.get(f"{url}/v1/models").json()["data"]}
        assert infos[COMBINED_ADAPTER]["digest"] == digest_of(NEW)


def test_mixed_batches_with_the_switched_combination_answer_as_each_alone(
        tiny_model_dir, lora_adapters, before_after, tmp_path):
    _, new = before_after
    declare(tmp_path, lora_adapters, OLD)
    with running_server(watched_config(tiny_model_dir, tmp_path, batch_wait_ms=200)) as url:
        declare(tmp_path, lora_adapters, NEW)
        wait_for(url, lambda h: h["adapters"][COMBINED_ADAPTER] == digest_of(NEW))
        names = [COMBINED_ADAPTER, "alpha", "beta", COMBINED_ADAPTER, "tiny-llama-test", "beta"]
        got: dict[int, str] = {}
        threads = [threading.Thread(target=lambda i=i, m=m: got.__setitem__(i, ask(url, m)))
                   for i, m in enumerate(names)]
        for thread in threads:  # sent together: one batch window holds them all
            thread.start()
        for thread in threads:
            thread.join(60)
        assert [got[i] for i in range(len(names))] == [new.get(m) or ask(url, m) for m in names]


def test_a_new_digest_of_a_weighed_adapter_makes_the_combination_again(tiny_model_dir, lora_adapters, tmp_path):
    declare(tmp_path, lora_adapters, OLD)
    with running_server(watched_config(tiny_model_dir, tmp_path)) as url:
        before = ask(url)
        version = tmp_path / f"..{time.monotonic_ns()}"  # alpha now holds beta's weights, under a new digest
        version.mkdir()
        other = "sha256:" + "c" * 64
        (version / "adapters.json").write_text(adapters_document([
            DeclaredAdapter("alpha", path=str(lora_adapters["beta"]), digest=other, strength=0.9),
            DeclaredAdapter("beta", path=str(lora_adapters["beta"]), digest=DIGEST_B, strength=0.1)]))
        (tmp_path / "..data_tmp").symlink_to(version.name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        want = combination_digest({"alpha": (other, 0.9), "beta": (DIGEST_B, 0.1)})
        wait_for(url, lambda h: h["adapters"][COMBINED_ADAPTER] == want)
        assert ask(url) != before
        assert ask(url) == fresh_alone_beta(tiny_model_dir, lora_adapters)


def fresh_alone_beta(tiny_model_dir, lora_adapters) -> str:
    """beta weighed 0.9 and 0.1 with itself, as a fresh server makes it."""
    config = tiny_config(tiny_model_dir, {"alpha": lora_adapters["beta"], "beta": lora_adapters["beta"]},
                         strengths=(("alpha", 0.9), ("beta", 0.1)))
    with running_server(config) as url:
        return ask(url)


def test_a_strength_out_of_range_in_the_file_switches_nothing(tiny_model_dir, lora_adapters, before_after, tmp_path):
    old, _ = before_after
    declare(tmp_path, lora_adapters, OLD)
    with running_server(watched_config(tiny_model_dir, tmp_path)) as url:
        declare(tmp_path, lora_adapters, {"alpha": 1.5, "beta": 0.1})
        said = wait_for(url, lambda h: h["switch"].get("error"))
        assert "strength 1.5" in said["switch"]["error"]
        assert said["adapters"][COMBINED_ADAPTER] == digest_of(OLD) and ask(url) == old[COMBINED_ADAPTER]


def test_the_admin_route_reweighs_a_weighed_adapter_it_replaces_but_adds_no_new_name(
        tiny_model_dir, lora_adapters, before_after):
    old, _ = before_after
    auth = {"Authorization": "Bearer sesame"}
    config = tiny_config(tiny_model_dir, {n: lora_adapters[n] for n in ("alpha", "beta")},
                         strengths=tuple(OLD.items()), api_key="sesame")
    with running_server(config) as url:
        def combined() -> str:
            answer = httpx.post(f"{url}/v1/completions", json={"model": COMBINED_ADAPTER, **PROMPT}, headers=auth)
            return answer.json()["choices"][0]["text"]

        assert combined() == old[COMBINED_ADAPTER]
        added = httpx.post(f"{url}/v1/load_lora_adapter", headers=auth,
                           json={"lora_name": "gamma", "lora_path": str(lora_adapters["beta"])})
        assert added.status_code == 200
        assert combined() == old[COMBINED_ADAPTER]  # gamma was never part of the combination
        replaced = httpx.post(f"{url}/v1/load_lora_adapter", headers=auth, json={
            "lora_name": "alpha", "lora_path": str(lora_adapters["beta"]), "load_inplace": True})
        assert replaced.status_code == 200
        assert combined() == fresh_alone_beta(tiny_model_dir, lora_adapters)  # alpha's weight 0.9, now beta's files


def test_a_combination_that_cannot_be_made_keeps_the_old_one_serving_and_says_why(
        tiny_model_dir, lora_adapters, before_after, tmp_path):
    from tests.fixtures.server import build_lora_adapter

    old, _ = before_after
    # two adapters that each train lm_head: each loads, but PEFT cannot weigh them into one
    saved = {n: build_lora_adapter(tiny_model_dir, tmp_path / f"saved-{n}", seed, modules_to_save=["lm_head"])
             for n, seed in (("alpha", 11), ("beta", 12))}
    folder = tmp_path / "declared"
    declare(folder, lora_adapters, OLD)
    with running_server(watched_config(tiny_model_dir, folder)) as url:
        version = folder / f"..{time.monotonic_ns()}"
        version.mkdir()
        digests = {"alpha": "sha256:" + "5" * 64, "beta": "sha256:" + "6" * 64}
        (version / "adapters.json").write_text(adapters_document([
            DeclaredAdapter(n, path=str(saved[n]), digest=digests[n], strength=OLD[n]) for n in ("alpha", "beta")]))
        (folder / "..data_tmp").symlink_to(version.name)
        os.replace(folder / "..data_tmp", folder / "..data")
        said = wait_for(url, lambda h: h["switch"].get("error"))
        assert "cannot weigh" in said["switch"]["error"] and "modules_to_save" in said["switch"]["error"]
        assert said["adapters"][COMBINED_ADAPTER] == digest_of(OLD)  # the old combination serves on
        assert {n: said["adapters"][n] for n in ("alpha", "beta")} == digests  # the adapters themselves switched
        assert ask(url) == old[COMBINED_ADAPTER]
        declare(folder, lora_adapters, NEW)  # the next declaration weighs as usual
        wait_for(url, lambda h: h["adapters"][COMBINED_ADAPTER] == digest_of(NEW) and not h["switch"].get("error"))
