"""Issue 23 end to end: `kairo run --local` twice on one run directory, the second a retrain that deploys, while a
bounded client loop asks the served model all along. The second deploy switches the running server to the new
adapter (the same process: no restart) and no request of the loop fails."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.fixtures.adapter import capital_rows
from tests.fixtures.http import jsonl_bytes
from tests.fixtures.local_run import (
    kairo_run,
    registry_cluster_config,
    stop_server,
    training_config,
    write_workspace,
)

pytestmark = [pytest.mark.slow, pytest.mark.registry]

HELD_OUT = capital_rows()[:6]
GOOD = jsonl_bytes(capital_rows() + HELD_OUT)
SPLIT = {"shuffle_dataset": False, "train_test_split": 0.7}


class ClientLoop:
    """One client asking again and again (at most `limit` requests) until stopped; every failure is kept."""

    def __init__(self, url: str, limit: int = 20_000):
        self.url, self.limit = url, limit
        self.answered = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        body = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 2}
        with httpx.Client(timeout=60) as http:
            for _ in range(self.limit):
                if self.stop.is_set():
                    return
                try:
                    answer = http.post(f"{self.url}/v1/chat/completions", json=body)
                    if answer.status_code == 200:
                        self.answered += 1
                    else:
                        self.failures.append(f"{answer.status_code}: {answer.text[:200]}")
                except httpx.HTTPError as err:
                    self.failures.append(repr(err))
                time.sleep(0.05)


def test_a_retrain_that_deploys_switches_the_served_adapter_with_no_failed_request(
        tmp_path, http_server, registry):
    cluster = registry_cluster_config(tmp_path / "cluster.yaml", registry.host)
    run_dir = tmp_path / "run"
    url = http_server.scoped("switch").serve("qa.jsonl", GOOD)

    def run(steps: int, *flags: str):
        path = write_workspace(tmp_path / f"switch-{steps}.yaml", "switch", input={"urls": [url]},
                               output={"image": f"{registry.host}/e2e/switch-adapter:live"},
                               config=training_config("switch-tuning", max_steps=steps, dataset=SPLIT))
        done = kairo_run(path, run_dir, "--cluster-config", str(cluster), "--keep-serving", *flags, keep_serving=True)
        assert done.code == 0, done.explain()
        return done

    state = run_dir / "volumes" / "work" / "state"
    try:
        first = run(40)
        served = first.deployed()
        pid = int((state / "serve.pid").read_text())
        clients = ClientLoop(served["url"])
        clients.thread.start()
        second = run(160, "--force")
        clients.stop.set()
        clients.thread.join(60)
        now = second.deployed()
        assert second.states["deploy"] == "Succeeded", second.explain()
        assert now["current"]["digest"] != served["current"]["digest"]
        assert "without a restart" in second.log("deploy")
        assert int((state / "serve.pid").read_text()) == pid  # the same server process
        assert clients.failures == [] and clients.answered > 0
        health = httpx.get(f"{now['url']}/health", timeout=10).json()
        assert health["adapters"] == {"switch": now["current"]["digest"]}
        declared = json.loads((state / "adapters.json").read_text())["adapters"]
        assert [a["digest"] for a in declared] == [now["current"]["digest"]]
    finally:
        stop_server(run_dir)
