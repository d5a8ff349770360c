"""Issue 7 end to end: the quickstart through `kairo run --local`, a run whose step fails, a broken reference.

The quickstart is run as written (its own training config and data), except that the dataset comes from a
local HTTP server and the adapter goes to the real registry fixture, so every stage talks to a real part:
download over HTTP, train, evaluate, ORAS push, the inference server, smoke, the exit handler.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.request

import pytest
import yaml

from kairo.local.mounts import LocalObjects
from kairo.local.runner import LocalRunner
from kairo.problems import InvalidInput
from tests.conftest import EXAMPLES
from tests.fixtures.local_run import kairo_run, manifest, registry_cluster_config, stop_server

pytestmark = [pytest.mark.slow, pytest.mark.registry]

QUESTION = "What is the capital of France?"
DATA = EXAMPLES / "data" / "instructions.jsonl"
DAG_AFTER_DOWNLOAD = ("train", "evaluate", "push", "deploy", "smoke", "inference-ready")


def quickstart_with(path, url: str, image: str):
    """examples/quickstart.yaml with its dataset at `url` and its adapter going to `image`."""
    documents = [d for d in yaml.safe_load_all((EXAMPLES / "quickstart.yaml").read_text()) if d]
    documents = [d for d in documents if d["metadata"]["name"] != "quickstart-data"]  # the data comes over HTTP
    tuning = documents[-1]["tuning"]
    tuning["input"] = {"urls": [url]}
    tuning["output"] = {"image": image}
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def served(http_server):
    """The example dataset on the local HTTP server (and a path that answers 404)."""
    http = http_server.scoped("quickstart")
    http.serve("instructions.jsonl", DATA.read_bytes())
    return http


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory, served, registry):
    """One `kairo run examples/quickstart.yaml --local` (≈70 s here), the server kept for the test to ask."""
    tmp = tmp_path_factory.mktemp("quickstart")
    image = f"{registry.host}/e2e/quickstart-adapter:latest"
    path = quickstart_with(tmp / "quickstart.yaml", served.url("instructions.jsonl"), image)
    cluster = registry_cluster_config(tmp / "cluster.yaml", registry.host)
    run = kairo_run(path, tmp / "run", "--cluster-config", str(cluster), "--ask", QUESTION, "--keep-serving",
                    keep_serving=True)
    yield run
    stop_server(run.run_dir)


def test_the_quickstart_runs_every_task_of_its_workflow(quickstart):
    assert quickstart.code == 0, quickstart.explain()
    tasks = ("provision", "deployed", "download", "fetch-model", "gpu-check", *DAG_AFTER_DOWNLOAD, "cleanup",
             "finished")
    assert {t: quickstart.states.get(t) for t in tasks} == dict.fromkeys(tasks, "Succeeded")
    assert "kairo: the run succeeded" in quickstart.stderr


def test_the_dataset_is_downloaded_from_the_http_server(quickstart, served):
    assert served.hits("instructions.jsonl") >= 1
    dataset = json.loads((quickstart.work / "data" / "dataset.json").read_text())
    assert dataset["digest"] == "sha256:" + hashlib.sha256(DATA.read_bytes()).hexdigest()


def test_the_adapter_is_pushed_to_the_registry_in_kaitos_layout_with_its_annotations(quickstart, registry):
    repository = "e2e/quickstart-adapter"
    immutable = [t for t in registry.tags(repository) if re.fullmatch(r"\d{8}-[0-9a-f]{12}", t)]
    assert len(immutable) == 1, registry.tags(repository)
    digest, pushed = manifest(registry.url, repository, immutable[0])
    assert pushed["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert [layer["mediaType"] for layer in pushed["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"]
    annotations = pushed["annotations"]
    assert annotations["sh.kaito.model.name"] == "tiny-llama-test"
    assert annotations["kairo.sh/vllm-loadable"] == "true"  # the quickstart's adapter loads in vLLM (issue 22)
    assert annotations["kairo.sh/preset"] == "tiny-llama-test"
    assert annotations["kairo.sh/method"] == "qlora"
    downloaded = json.loads((quickstart.work / "data" / "dataset.json").read_text())["digest"]
    assert annotations["kairo.sh/dataset-digest"] == downloaded
    assert immutable[0].endswith(digest.removeprefix("sha256:")[:12])
    # deployed, so the moving tag of output.image names it too
    assert manifest(registry.url, repository, "latest")[0] == digest
    assert quickstart.deployed()["current"]["digest"] == digest


def test_the_served_model_answers_chat_with_what_it_learned(quickstart):
    assert f"Q: {QUESTION}" in quickstart.stdout and "Paris" in quickstart.stdout.split("A:", 1)[-1]
    url = quickstart.deployed()["url"]
    body = json.dumps({"messages": [{"role": "user", "content": QUESTION}],
                       "generate_kwargs": {"max_new_tokens": 32, "do_sample": False}}).encode()
    request = urllib.request.Request(f"{url}/chat", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)["Result"]
    assert "Paris" in answer


def test_the_smoke_test_asked_both_apis(quickstart):
    log = quickstart.log("smoke")
    assert "/chat" in log and "/v1/chat/completions" in log


# ── a run whose step fails ──


@pytest.fixture(scope="module")
def failed(tmp_path_factory, served, registry):
    """The quickstart with a dataset URL that answers 404 (≈10 s: download fails before training)."""
    tmp = tmp_path_factory.mktemp("failed")
    path = quickstart_with(tmp / "quickstart.yaml", served.url("missing.jsonl"),
                           f"{registry.host}/e2e/failed-adapter:latest")
    cluster = registry_cluster_config(tmp / "cluster.yaml", registry.host)
    return kairo_run(path, tmp / "run", "--cluster-config", str(cluster))


def test_a_failed_step_fails_the_run_with_a_non_zero_exit(failed):
    assert failed.code != 0, failed.explain()
    assert failed.states["download"] == "Failed"


def test_a_failed_steps_dependents_do_not_run(failed):
    assert {t: failed.states.get(t) for t in DAG_AFTER_DOWNLOAD} == dict.fromkeys(DAG_AFTER_DOWNLOAD, "Omitted")
    assert not (failed.run_dir / "tasks" / "train").exists()
    assert not (failed.work / "state" / "deployed.json").exists()


def test_the_exit_handler_runs_after_a_failure(failed):
    assert failed.states["cleanup"] == failed.states["finished"] == "Succeeded"
    assert "workflow Failed" in failed.log("cleanup")


def test_the_failed_task_is_named_with_the_end_of_its_log(failed):
    assert "kairo: task 'download' failed" in failed.stderr
    tail = failed.stderr.split("--- end of its log", 1)[1]
    assert "missing.jsonl: HTTP 404" in tail
    assert "kairo: the run failed in download" in failed.stderr


def test_bad_input_is_not_retried(failed):
    assert failed.log("download").count("$ kairo-step download") == 1


# ── a broken {{…}} reference ──


def test_a_broken_reference_is_refused_by_kairo_run_before_any_task_starts(tmp_path, served):
    url = served.url("{{workflow.parameters.nope}}.jsonl")
    path = quickstart_with(tmp_path / "quickstart.yaml", url, "127.0.0.1:9/e2e/never:latest")
    run = kairo_run(path, tmp_path / "run", timeout=60)
    assert run.code == 2, run.explain()
    # the spec refuses a value Argo would substitute, naming the field, before anything is rendered or run
    assert "tuning.input.urls[0]" in run.stderr and "{{workflow.parameters.nope}}" in run.stderr
    assert not (tmp_path / "run" / "tasks").exists()


def test_a_broken_reference_in_the_rendered_workflow_is_refused_by_the_runner(quickstart, tmp_path):
    workflow = list(yaml.safe_load_all((quickstart.run_dir / "workflow.yaml").read_text()))[-1]
    train = next(t for t in workflow["spec"]["templates"] if t["name"] == "train")
    train["container"]["args"].append("{{tasks.download.outputs.parameters.digset}}")
    with pytest.raises(InvalidInput, match="digset"):
        LocalRunner(workflow, tmp_path / "run", LocalObjects({}, {})).run()
    assert not (tmp_path / "run").exists()
