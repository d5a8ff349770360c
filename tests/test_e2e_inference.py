"""Issue 22 end to end: an inference Workspace with two adapters — one an image pushed to the local registry by
kairo's own push step, one a PEFT folder on a volume (a claim mapped with --pvc) — run with `kairo run --local`,
then asked through Kaito's `/chat` and the `openai` client with each adapter by name, and the combined one.

The run is the Workflow `kairo render` prints: provision → fetch-model → pull-adapter-0/1 → deploy → smoke,
with the status reports; the server it leaves (--keep-serving) is stopped at the end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import httpx
import openai
import pytest
import yaml

from kairo.serving.options import COMBINED_ADAPTER
from tests.fixtures.local_run import kairo, kairo_run, registry_cluster_config, stop_server
from tests.fixtures.server import alone

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def workspace(image: str) -> dict:
    """examples/inference-quickstart.yaml, its image adapter the one the test pushed."""
    from tests.conftest import EXAMPLES

    data = yaml.safe_load((EXAMPLES / "inference-quickstart.yaml").read_text())
    data["inference"]["adapters"][0]["source"]["image"] = image
    return data


@pytest.fixture(scope="module")
def served(tmp_path_factory, registry, lora_adapters):
    tmp = tmp_path_factory.mktemp("inference")
    work = tmp / "push-work"
    shutil.copytree(lora_adapters["alpha"], work / "adapter")
    pushed = subprocess.run([sys.executable, "-m", "kairo.step", "push", "--image", f"{registry.host}/kairo/alpha-adapter:1",
                             "--plain-http", "--workdir", str(work), "--outputs", str(tmp / "push-out")],
                            capture_output=True, text=True, timeout=120)
    assert pushed.returncode == 0, pushed.stderr
    volume = tmp / "volume-adapter"
    shutil.copytree(lora_adapters["beta"], volume)
    path = tmp / "inference.yaml"
    # by the tag push set (the immutable one: the moving tag is moved by a tuning run's deploy)
    tag = (tmp / "push-out" / "tag").read_text().strip()
    path.write_text(yaml.safe_dump(workspace(f"{registry.host}/kairo/alpha-adapter:{tag}"), sort_keys=False))
    cluster = registry_cluster_config(tmp / "cluster.yaml", registry.host)
    run = kairo_run(path, tmp / "run", "--cluster-config", str(cluster), "--pvc", f"quickstart-adapters={volume}",
                    "--keep-serving",
                    keep_serving=True)
    try:
        yield run, (tmp / "push-out" / "digest").read_text().strip(), path, cluster
    finally:
        stop_server(run.run_dir)


def test_the_inference_workflow_runs_every_step(served):
    run, *_ = served
    assert run.code == 0, run.explain()
    for task in ("provision", "fetch-model", "pull-adapter-0", "pull-adapter-1", "deploy", "smoke",
                 "inference-ready"):
        assert run.states.get(task) == "Succeeded", (task, run.explain())
    assert "train" not in run.states and "push" not in run.states


def test_the_image_adapter_is_pulled_by_the_digest_push_made(served):
    run, digest, *_ = served
    outputs = run.run_dir / "tasks" / "pull-adapter-0" / "root" / "tmp" / "outputs"
    assert (outputs / "digest").read_text() == digest
    assert (outputs / "ref").read_text().endswith(f"/kairo/alpha-adapter@{digest}")
    assert (run.work / "adapters" / "quickstart" / "adapter_model.safetensors").is_file()
    assert (run.work / "adapters" / "on-volume" / "adapter_config.json").is_file()


def test_each_adapter_answers_by_name_through_the_openai_client(served, tiny_model_dir, lora_adapters):
    run, *_ = served
    client = openai.OpenAI(base_url=f"{run.deployed()['url']}/v1", api_key="unused", max_retries=0, timeout=60)
    names = [m.id for m in client.models.list().data]
    assert names == [COMBINED_ADAPTER, "quickstart", "on-volume", "tiny-llama-test"]
    for name, source in (("quickstart", "alpha"), ("on-volume", "beta")):
        answer = client.chat.completions.create(model=name, messages=QUESTION, max_tokens=6, temperature=0)
        assert answer.choices[0].message.content == alone(tiny_model_dir, lora_adapters[source], QUESTION, 6)


def test_each_adapter_answers_by_name_through_kaitos_chat(served, tiny_model_dir, lora_adapters):
    run, *_ = served
    url = run.deployed()["url"]
    for name, source in (("quickstart", "alpha"), ("on-volume", "beta")):
        body = {"model": name, "messages": QUESTION, "generate_kwargs": {"do_sample": False, "max_new_tokens": 6}}
        answer = httpx.post(f"{url}/chat", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["Result"] == alone(tiny_model_dir, lora_adapters[source], QUESTION, 6)


def test_render_prints_the_same_workflow_the_run_executed(served):
    run, _, path, cluster = served
    rendered = kairo("render", str(path), "--local", "--cluster-config", str(cluster))
    assert rendered.returncode == 0, rendered.stderr
    workflow = list(yaml.safe_load_all(rendered.stdout))[-1]
    ran = list(yaml.safe_load_all((run.run_dir / "workflow.yaml").read_text()))[-1]
    assert json.dumps(workflow["spec"], sort_keys=True) == json.dumps(ran["spec"], sort_keys=True)
