"""`kaito.sh/runtime: vllm`: vLLM's OpenAI server as the inference Deployment. No vLLM runs here (no build for
CPU, none on the GPU machine), so the Deployment is checked strictly by schema, its arguments against vLLM's
flags (the parser below declares exactly the flags kairo passes, as vLLM's source registers them: see
kairo/manifests/vllm.py for the files and lines), and the adapter against vLLM's LoRA rules."""

from __future__ import annotations

import argparse
import json

import kubernetes_validate
import pytest

from kairo import exitcodes
from kairo.clients import kube as k
from kairo.manifests import inference as inf
from kairo.manifests import vllm
from kairo.steps import deploy
from tests.test_deploy import NAME, NS, READY, play_controller

DIGEST = "sha256:" + "ab" * 32
REF = f"registry.example.com/team/phi3-adapter@{DIGEST}"
BASE = dict(workspace="phi3", namespace="ml", preset="phi-3-mini-128k-instruct", adapter_ref=REF, gpus=1,
            runtime="vllm", lora_ranks={"phi3": 8})


def vllm_parser() -> argparse.ArgumentParser:
    """vLLM's flags that kairo uses, declared as vLLM declares them (cli_args.py's FrontendArgs and LoRAParserAction's
    nargs, arg_utils.py's EngineArgs.add_cli_args: ModelConfig, LoadConfig and the LoRAConfig group)."""
    parser = argparse.ArgumentParser(exit_on_error=False, allow_abbrev=False)
    parser.add_argument("--model")
    parser.add_argument("--revision")
    parser.add_argument("--served-model-name", nargs="+")
    parser.add_argument("--download-dir")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--max-model-len", type=int)
    parser.add_argument("--enable-lora", action=argparse.BooleanOptionalAction)
    parser.add_argument("--lora-modules", nargs="+")
    parser.add_argument("--max-loras", type=int)
    parser.add_argument("--max-lora-rank", type=int, choices=vllm.VLLM_RANKS)
    return parser


def serve_of(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("changes", [{}, {"api_key_secret": "key", "pull_secret": "acr", "plain_http": True},
                                     {"gpus": 0, "max_model_len": 4096}])
def test_the_vllm_deployment_passes_kubernetes_validate_strict(changes):
    deployment = inf.build_deployment(inf.InferenceSpec(**{**BASE, **changes}))
    kubernetes_validate.validate(deployment, "1.33", strict=True)
    kubernetes_validate.validate(inf.build_service(inf.InferenceSpec(**{**BASE, **changes})), "1.33", strict=True)


def test_vllm_gets_the_pinned_image_the_model_and_the_adapter_as_a_lora_module():
    serve = serve_of(inf.build_deployment(inf.InferenceSpec(**BASE)))
    assert serve["image"] == "vllm/vllm-openai:v0.11.0"
    assert serve["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    args = vllm_parser().parse_args(serve["args"])  # an unknown flag, or a bad value, raises
    assert args.model == "microsoft/Phi-3-mini-128k-instruct" and args.revision
    assert args.served_model_name == ["phi-3-mini-128k-instruct"]
    assert args.enable_lora and args.lora_modules == ["phi3=/adapters/phi3"]
    assert (args.max_loras, args.max_lora_rank) == (1, 8)
    assert (args.host, args.port) == ("0.0.0.0", inf.SERVE_PORT)


def test_the_service_and_probes_are_the_same_port_and_vllms_health():
    spec = inf.InferenceSpec(**BASE)
    serve = serve_of(inf.build_deployment(spec))
    assert serve["ports"] == [{"name": "http", "containerPort": inf.SERVE_PORT, "protocol": "TCP"}]
    assert inf.build_service(spec)["spec"]["ports"][0] == {"name": "http", "port": 80, "targetPort": inf.SERVE_PORT,
                                                          "protocol": "TCP"}
    assert {serve[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {"/health"}


def test_the_adapter_is_pulled_by_digest_before_vllm_starts():
    pod = inf.build_deployment(inf.InferenceSpec(**{**BASE, "pull_secret": "acr"}))["spec"]["template"]["spec"]
    (puller,) = pod["initContainers"]
    assert puller["args"][:2] == [REF, "/adapters/phi3"] and "--pull-secret-file" in puller["args"]


@pytest.mark.parametrize(("ranks", "flag"), [([8], 8), ([8, 16], 16), ([20], 32), ([300], 320), ([512], 512)])
def test_max_lora_rank_is_the_smallest_vllm_allows_that_holds_every_adapter(ranks, flag):
    modules = [vllm.LoraModule(f"a{i}", f"/adapters/a{i}", r) for i, r in enumerate(ranks)]
    args = vllm_parser().parse_args(["--model", "m", *vllm.lora_args(modules)])
    assert (args.max_lora_rank, args.max_loras) == (flag, len(ranks))
    assert args.lora_modules == [f"a{i}=/adapters/a{i}" for i in range(len(ranks))]


def test_an_inference_workspaces_adapters_are_each_a_lora_module():
    spec = inf.InferenceSpec(**{**BASE, "adapter_ref": "", "lora_ranks": {"a": 16, "b": 64},
                                "adapters": [{"name": "a", "ref": REF}, {"name": "b", "volume": {"emptyDir": {}}}]})
    deployment = inf.build_deployment(spec)
    kubernetes_validate.validate(deployment, "1.33", strict=True)
    args = vllm_parser().parse_args(serve_of(deployment)["args"])
    assert args.lora_modules == ["a=/adapters/a", "b=/adapters/b"] and (args.max_loras, args.max_lora_rank) == (2, 64)


@pytest.mark.parametrize(("config", "says"), [
    ({"r": 8, "modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"r": 8, "use_dora": True}, "DoRA"),
    ({"r": 8, "bias": "all"}, "bias"),
    ({"r": 1024}, "ranks from 1 to 512"),
])
def test_vllms_lora_rules_refuse_what_vllm_refuses(config, says):
    (problem,) = vllm.adapter_problems("phi3", {"bias": "none", **config})
    assert says in problem


def test_a_plain_lora_adapter_passes_vllms_rules():
    assert vllm.adapter_problems("phi3", {"r": 16, "bias": "none", "modules_to_save": None, "use_dora": False}) == []


def run_vllm_deploy(kubeconfig, tmp_path, adapter_config: dict,
                    ref: str = "registry.example.com/team/phi3-adapter@sha256:" + "1" * 64) -> int:
    (tmp_path / "work" / "adapter").mkdir(parents=True, exist_ok=True)
    (tmp_path / "work" / "adapter" / "adapter_config.json").write_text(json.dumps(adapter_config))
    return deploy.main(["--workspace", NAME, "--namespace", NS, "--preset", "tiny-llama-test", "--adapter-ref",
                        ref, "--runtime", "vllm",
                        "--timeout", "10", "--kubeconfig", str(kubeconfig), "--workdir", str(tmp_path / "work"),
                        "--outputs", str(tmp_path / "out")])


def test_deploy_with_the_vllm_runtime_sets_the_rank_from_the_trained_adapter(kube, kubeconfig, tmp_path):
    play_controller(kube, [READY])
    assert run_vllm_deploy(kubeconfig, tmp_path, {"r": 32, "bias": "none"}) == exitcodes.OK
    serve = serve_of(k.get(kube.api, "apps/v1", "Deployment", NAME, NS))
    args = vllm_parser().parse_args(serve["args"])
    assert args.max_lora_rank == 32 and args.lora_modules == [f"{NAME}=/adapters/{NAME}"]
    assert k.get(kube.api, "v1", "ConfigMap", f"{NAME}-adapters", NS) is None  # vLLM's adapters are in the template


def test_deploy_refuses_an_adapter_vllm_cannot_load(kube, kubeconfig, tmp_path, capsys):
    assert run_vllm_deploy(kubeconfig, tmp_path, {"r": 8, "modules_to_save": ["lm_head"]}) == exitcodes.BAD_INPUT
    assert "vLLM would refuse the adapter" in capsys.readouterr().err
    assert kube.objects("apps/v1/deployments", NS) == []


def test_the_annotation_sends_the_runtime_to_deploy_and_smoke_asks_the_openai_api_only():
    from kairo.cluster import ClusterConfig
    from kairo.pipelines import build_workflow
    from kairo.spec import check_workspace
    from tests.fixtures.workspaces import KAITO_QUICKSTART, changed
    from tests.test_pipelines import arg, templates

    checked = check_workspace(changed(KAITO_QUICKSTART, metadata__annotations={"kaito.sh/runtime": "vllm"}),
                              ClusterConfig())
    assert checked.ok, checked.errors
    assert any("vLLM serves the OpenAI API only, no Kaito /chat" in str(w) for w in checked.warnings)
    rendered = templates(build_workflow(checked.workspace, ClusterConfig()))
    assert arg(rendered["deploy"], "--runtime") == "vllm"
    assert "--openai-only" in rendered["smoke"]["container"]["args"]
    plain = templates(build_workflow(check_workspace(KAITO_QUICKSTART, ClusterConfig()).workspace, ClusterConfig()))
    assert arg(plain["deploy"], "--runtime") is None and "--openai-only" not in plain["smoke"]["container"]["args"]


def test_an_inference_workspace_annotated_vllm_sends_the_runtime_to_its_deploy_too(examples):
    import yaml

    from kairo.cluster import ClusterConfig
    from kairo.pipelines import build_workflow
    from kairo.spec import check_workspace
    from tests.test_pipelines import arg, templates

    body = yaml.safe_load((examples / "inference-quickstart.yaml").read_text())
    body["metadata"]["annotations"]["kaito.sh/runtime"] = "vllm"
    for adapter in body["inference"]["adapters"]:
        adapter.pop("strength", None)  # vLLM refuses strengths (kairo.spec.inference)
    checked = check_workspace(body, ClusterConfig())
    assert checked.ok, checked.errors
    rendered = templates(build_workflow(checked.workspace, ClusterConfig()))
    assert arg(rendered["deploy"], "--runtime") == "vllm"
    assert "--openai-only" in rendered["smoke"]["container"]["args"]


def test_an_adapter_only_change_rolls_vllms_pods_as_vllm_reads_its_lora_modules_at_start(kube, kubeconfig, tmp_path):
    """kairo.manifests.vllm, "Why an adapter change rolls vLLM's pods": the new digest is in the pod template."""
    from tests.test_deploy_inference_switch import rolled

    play_controller(kube, [READY])
    assert run_vllm_deploy(kubeconfig, tmp_path, {"r": 16, "bias": "none"}) == exitcodes.OK
    before = k.get(kube.api, "apps/v1", "Deployment", NAME, NS)
    controller = play_controller(kube, [READY])
    second = "registry.example.com/team/phi3-adapter@sha256:" + "2" * 64
    assert run_vllm_deploy(kubeconfig, tmp_path, {"r": 16, "bias": "none"}, second) == exitcodes.OK
    controller.join(5)
    assert rolled(kube, before, NAME)
    (puller,) = k.get(kube.api, "apps/v1", "Deployment", NAME, NS)["spec"]["template"]["spec"]["initContainers"]
    assert puller["args"][0] == second
    assert k.get(kube.api, "v1", "ConfigMap", f"{NAME}-adapters", NS) is None
