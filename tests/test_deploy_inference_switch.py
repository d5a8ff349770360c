"""An inference workspace's adapters switch in place, as the tuned adapter does: deploy against KMock's emulator.

Its adapters are declared in the `<workspace>-adapters` ConfigMap the Deployment mounts by name; a new digest, an
adapter added or removed changes only the ConfigMap, and deploy waits until the pods report the declared digests
(tests.fixtures.inference_pods plays their servers). A strength change switches in place too (the server makes
`combined_adapter` again); giving the first strength rolls, as the combination is served from start or not at all.
"""

from __future__ import annotations

import json
import time

import kubernetes_validate

from kairo import exitcodes
from kairo.clients import kube as k
from kairo.manifests import inference as inf
from kairo.manifests.adapters import (
    ADAPTERS_KEY,
    COMBINED_ADAPTER,
    combination_digest,
    configmap_name,
    declared_in,
    served_digests,
)
from kairo.steps import deploy
from tests.test_deploy import NS, READY, play_controller

NAME = "serve-two"
REPO = "registry.example.com/team"


def ref(adapter: str, digit: str) -> str:
    return f"{REPO}/{adapter}@sha256:" + digit * 64


PVC = json.dumps({"persistentVolumeClaim": {"claimName": "adapters"}})


def run_deploy(kubeconfig, tmp_path, *adapters: str, timeout: str = "10") -> int:
    return deploy.main(["--workspace", NAME, "--namespace", NS, "--preset", "tiny-llama-test", *adapters,
                        "--gpus", "0", "--timeout", timeout, "--kubeconfig", str(kubeconfig),
                        "--outputs", str(tmp_path / "out")])


def declared(kube) -> dict[str, str]:
    return {a.name: a.digest or a.path for a in declared_in(k.get(kube.api, "v1", "ConfigMap", configmap_name(NAME), NS))}


def deployment(kube, name: str = NAME) -> dict:
    return k.get(kube.api, "apps/v1", "Deployment", name, NS)


def rolled(kube, before: dict, name: str = NAME) -> bool:
    """Whether the pods were replaced: the template changed, and the emulated pod with it."""
    deadline = time.monotonic() + 3
    while kube.pods.restarts == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    return deployment(kube, name)["spec"]["template"] != before["spec"]["template"] and kube.pods.restarts > 0


def test_a_new_digest_switches_the_running_pods_and_the_configmap_names_it(kube, kubeconfig, tmp_path, capsys):
    play_controller(kube, [READY], name=NAME)
    assert run_deploy(kubeconfig, tmp_path, "--adapter", f"coder={ref('coder', '1')}",
                      "--adapter", f"writer={ref('writer', '2')}") == exitcodes.OK
    before = deployment(kube)
    assert run_deploy(kubeconfig, tmp_path, "--adapter", f"coder={ref('coder', '3')}",
                      "--adapter", f"writer={ref('writer', '2')}") == exitcodes.OK
    after = deployment(kube)
    assert after["spec"] == before["spec"]  # same pod template, same replicas: nothing rolled
    assert after["metadata"].get("generation") == before["metadata"].get("generation")
    assert kube.pods.restarts == 0
    assert declared(kube) == {"coder": "sha256:" + "3" * 64, "writer": "sha256:" + "2" * 64}
    assert kube.pods.served == declared(kube)
    err = capsys.readouterr().err
    assert "only the adapter changed: the running servers switch" in err
    assert f"1 pod(s) serve coder sha256:{'3' * 64}, writer sha256:{'2' * 64}" in err


def test_an_adapter_added_or_removed_changes_only_the_configmap(kube, kubeconfig, tmp_path):
    play_controller(kube, [READY], name=NAME)
    assert run_deploy(kubeconfig, tmp_path, "--adapter", f"coder={ref('coder', '1')}") == exitcodes.OK
    before = deployment(kube)
    assert run_deploy(kubeconfig, tmp_path, "--adapter", f"coder={ref('coder', '1')}",
                      "--adapter", f"writer={ref('writer', '2')}") == exitcodes.OK
    assert deployment(kube)["spec"] == before["spec"]
    assert kube.pods.served == {"coder": "sha256:" + "1" * 64, "writer": "sha256:" + "2" * 64}
    assert run_deploy(kubeconfig, tmp_path, "--adapter", f"writer={ref('writer', '2')}") == exitcodes.OK
    assert deployment(kube)["spec"] == before["spec"] and kube.pods.restarts == 0
    assert declared(kube) == {"writer": "sha256:" + "2" * 64}
    assert kube.pods.served == {"writer": "sha256:" + "2" * 64}  # deploy waited until coder was gone


def test_a_volume_adapter_is_declared_by_where_the_pod_mounts_it(kube, kubeconfig, tmp_path):
    play_controller(kube, [READY], name=NAME)
    assert run_deploy(kubeconfig, tmp_path, "--adapter", f"coder={ref('coder', '1')}",
                      "--adapter-volume", f"on-volume={PVC}") == exitcodes.OK
    before = deployment(kube)
    assert declared(kube) == {"coder": "sha256:" + "1" * 64, "on-volume": "/adapters/on-volume"}
    assert run_deploy(kubeconfig, tmp_path, "--adapter", f"coder={ref('coder', '4')}",
                      "--adapter-volume", f"on-volume={PVC}") == exitcodes.OK
    assert deployment(kube)["spec"] == before["spec"] and kube.pods.restarts == 0


def test_a_failed_switch_fails_the_step_and_declares_the_adapters_serving_before(kube, kubeconfig, tmp_path, capsys):
    play_controller(kube, [READY], name=NAME)
    kube.pods.refuse.add("sha256:" + "9" * 64)
    assert run_deploy(kubeconfig, tmp_path, "--adapter", f"coder={ref('coder', '1')}") == exitcodes.OK
    capsys.readouterr()
    assert run_deploy(kubeconfig, tmp_path, "--adapter", f"coder={ref('coder', '9')}") == exitcodes.FAILED
    err = capsys.readouterr().err
    assert f"could not switch coder to sha256:{'9' * 64}; it keeps serving sha256:{'1' * 64}" in err
    assert f"put the previous adapter back: coder sha256:{'1' * 64}" in err
    assert declared(kube) == {"coder": "sha256:" + "1" * 64}  # a restarted pod serves that one too


def test_a_strength_change_switches_in_place_and_deploy_waits_for_the_new_combination(
        kube, kubeconfig, tmp_path, capsys):
    play_controller(kube, [READY], name=NAME)
    two = ["--adapter", f"coder={ref('coder', '1')}", "--adapter", f"writer={ref('writer', '2')}"]
    assert run_deploy(kubeconfig, tmp_path, *two, "--strength", "coder=0.7") == exitcodes.OK
    before = deployment(kube)
    serve = before["spec"]["template"]["spec"]["containers"][0]
    assert "--strength" not in serve["args"] and not before["spec"]["template"]["spec"].get("initContainers")
    capsys.readouterr()
    assert run_deploy(kubeconfig, tmp_path, *two, "--strength", "coder=0.4") == exitcodes.OK
    assert not rolled(kube, before) and deployment(kube)["spec"] == before["spec"]
    configmap = k.get(kube.api, "v1", "ConfigMap", configmap_name(NAME), NS)
    assert {a.name: a.strength for a in declared_in(configmap)} == {"coder": 0.4, "writer": None}
    combination = served_digests(declared_in(configmap))[COMBINED_ADAPTER]
    assert combination == combination_digest({"coder": ("sha256:" + "1" * 64, 0.4),
                                              "writer": ("sha256:" + "2" * 64, 1.0)})
    assert kube.pods.served[COMBINED_ADAPTER] == combination
    err = capsys.readouterr().err
    assert "only the adapter changed: the running servers switch" in err and f"combined_adapter {combination}" in err


def test_with_strengths_a_new_digest_switches_in_place_and_the_combination_follows(kube, kubeconfig, tmp_path):
    play_controller(kube, [READY], name=NAME)
    assert run_deploy(kubeconfig, tmp_path, "--adapter", f"coder={ref('coder', '1')}",
                      "--strength", "coder=0.7") == exitcodes.OK
    before = deployment(kube)
    assert run_deploy(kubeconfig, tmp_path, "--adapter", f"coder={ref('coder', '5')}",
                      "--strength", "coder=0.7") == exitcodes.OK
    assert not rolled(kube, before)
    assert kube.pods.served[COMBINED_ADAPTER] == combination_digest({"coder": ("sha256:" + "5" * 64, 0.7)})


def test_a_failed_combination_fails_the_step_and_declares_the_strengths_serving_before(
        kube, kubeconfig, tmp_path, capsys):
    play_controller(kube, [READY], name=NAME)
    one = ["--adapter", f"coder={ref('coder', '1')}"]
    bad = combination_digest({"coder": ("sha256:" + "1" * 64, 0.2)})
    kube.pods.refuse.add(bad)
    assert run_deploy(kubeconfig, tmp_path, *one, "--strength", "coder=0.7") == exitcodes.OK
    assert run_deploy(kubeconfig, tmp_path, *one, "--strength", "coder=0.2") == exitcodes.FAILED
    assert f"could not switch combined_adapter to {bad}" in capsys.readouterr().err
    configmap = k.get(kube.api, "v1", "ConfigMap", configmap_name(NAME), NS)
    assert [a.strength for a in declared_in(configmap)] == [0.7]


def test_giving_the_first_strength_rolls_the_pods_as_the_combination_is_served_from_start(
        kube, kubeconfig, tmp_path):
    play_controller(kube, [READY], name=NAME)
    assert run_deploy(kubeconfig, tmp_path, "--adapter", f"coder={ref('coder', '1')}") == exitcodes.OK
    before = deployment(kube)
    controller = play_controller(kube, [READY], name=NAME)
    assert run_deploy(kubeconfig, tmp_path, "--adapter", f"coder={ref('coder', '1')}",
                      "--strength", "coder=0.7") == exitcodes.OK
    assert rolled(kube, before)
    controller.join(5)
    assert "--combination-type" in deployment(kube)["spec"]["template"]["spec"]["containers"][0]["args"]


def test_the_first_deploy_onto_a_deployment_an_earlier_kairo_laid_out_rolls_and_says_so(
        kube, kubeconfig, tmp_path, capsys, monkeypatch):
    play_controller(kube, [READY], name=NAME)
    two = ["--adapter", f"coder={ref('coder', '1')}", "--adapter", f"writer={ref('writer', '2')}",
           "--strength", "coder=0.7"]
    with monkeypatch.context() as old_kairo:  # the earlier kairo rolled on strengths: pullers, --adapter arguments
        old_kairo.setattr(inf, "switches_in_place", lambda spec: False)
        assert run_deploy(kubeconfig, tmp_path, *two) == exitcodes.OK
    before = deployment(kube)
    assert len(before["spec"]["template"]["spec"]["initContainers"]) == 2
    capsys.readouterr()
    controller = play_controller(kube, [READY], name=NAME)
    assert run_deploy(kubeconfig, tmp_path, *two) == exitcodes.OK  # the same adapters, now declared
    err = capsys.readouterr().err
    assert "the pods roll" in err and "no pod restarts" not in err
    assert f"rollout of {NS}/{NAME} done" in err  # the rollout was waited for
    assert rolled(kube, before)
    controller.join(5)
    # (KMock merges an apply patch: the dropped pullers stay there, where a real API server removes them)
    assert "--adapters-file" in deployment(kube)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert kube.pods.served["coder"] == "sha256:" + "1" * 64 and COMBINED_ADAPTER in kube.pods.served


def test_an_unchanged_layout_still_switches_in_place_with_the_deployment_read_back(kube, kubeconfig, tmp_path):
    play_controller(kube, [READY], name=NAME)
    assert run_deploy(kubeconfig, tmp_path, "--adapter", f"coder={ref('coder', '1')}") == exitcodes.OK
    live = deployment(kube)
    assert not inf.layout_changes(live, inf.build_deployment(inf.InferenceSpec(
        NAME, NS, "tiny-llama-test", "", gpus=0, adapters=[{"name": "coder", "ref": ref("coder", "7")}])))


def test_rollback_declares_an_inference_workspaces_previous_adapter_set_again(kube, kubeconfig, tmp_path, capsys):
    from kairo.cli import main
    from kairo.clients.rollout import current_record

    play_controller(kube, [READY], name=NAME)
    first = ["--adapter", f"coder={ref('coder', '1')}", "--adapter", f"writer={ref('writer', '2')}",
             "--strength", "coder=0.7"]
    assert run_deploy(kubeconfig, tmp_path, *first) == exitcodes.OK
    _, [entry] = current_record(kube.api, NAME, NS)
    assert entry.digest.startswith("sha256:") and entry.adapters
    before = deployment(kube)
    assert run_deploy(kubeconfig, tmp_path, "--adapter", f"coder={ref('coder', '3')}",
                      "--strength", "coder=0.4") == exitcodes.OK
    assert declared(kube) == {"coder": "sha256:" + "3" * 64}
    capsys.readouterr()
    assert main(["rollback", NAME, "-n", NS, "--to", entry.digest.removeprefix("sha256:")[:12],
                 "--kubeconfig", str(kubeconfig), "--timeout", "10"]) == 0
    assert declared(kube) == {"coder": "sha256:" + "1" * 64, "writer": "sha256:" + "2" * 64}
    configmap = k.get(kube.api, "v1", "ConfigMap", configmap_name(NAME), NS)
    assert {a.name: a.strength for a in declared_in(configmap)} == {"coder": 0.7, "writer": None}
    assert kube.pods.served == served_digests(declared_in(configmap))  # deploy waited for the switch
    assert deployment(kube)["spec"] == before["spec"] and kube.pods.restarts == 0  # switched, not rolled
    current, history = current_record(kube.api, NAME, NS)
    assert current.digest == entry.digest and current.note.startswith("rollback from")
    assert len(history) == 3
    assert "rolled back" in capsys.readouterr().out


def test_rollback_to_an_inference_entry_without_a_set_is_refused(kube, kubeconfig, tmp_path, capsys):
    from kairo.cli import main

    play_controller(kube, [READY], name=NAME)
    assert run_deploy(kubeconfig, tmp_path, "--adapter", f"coder={ref('coder', '1')}") == exitcodes.OK
    service = k.get(kube.api, "v1", "Service", NAME, NS)
    old = inf.DeployedAdapter(ref="coder=" + ref("coder", "0"), digest="sha256:" + "0" * 64)  # an earlier kairo's
    _, history = inf.read_record(service["metadata"]["annotations"])
    k.merge_patch(kube.api, "v1", "Service", NAME, {"metadata": {"annotations": inf.record_annotations(
        history[0], [history[0], old])}}, NS)
    assert main(["rollback", NAME, "-n", NS, "--to", "0" * 12, "--kubeconfig", str(kubeconfig)]) == 2
    assert "names no adapter set" in capsys.readouterr().err
    assert declared(kube) == {"coder": "sha256:" + "1" * 64}


# -- the manifests, by value ------------------------------------------------------------------------------------


def spec(**fields) -> inf.InferenceSpec:
    return inf.InferenceSpec(NAME, NS, "tiny-llama-test", "", gpus=0, **fields)


TWO = [{"name": "coder", "ref": ref("coder", "1"), "pull_secret": "acr"},
       {"name": "on-volume", "volume": {"persistentVolumeClaim": {"claimName": "adapters"}}}]


def test_the_declared_deployment_mounts_the_configmap_the_server_reads_at_start_and_watches():
    deployment = inf.build_deployment(spec(adapters=TWO))
    kubernetes_validate.validate(deployment, "1.33", strict=True)
    pod = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod  # the server pulls the image adapters by digest itself
    (serve,) = pod["containers"]
    args = serve["args"]
    assert args[args.index("--adapters-file") + 1] == f"/etc/kairo/adapters/{ADAPTERS_KEY}"
    assert {"name": "adapters-declared", "configMap": {"name": configmap_name(NAME)}} in pod["volumes"]
    assert {"name": "adapters-declared", "mountPath": "/etc/kairo/adapters", "readOnly": True} in serve["volumeMounts"]
    assert {"name": "adapter-volume-0", "mountPath": "/adapters/on-volume", "readOnly": True} in serve["volumeMounts"]
    assert args[args.index("--pull-secret-file") + 1] == "/etc/kairo/secrets/pull/.dockerconfigjson"
    assert ref("coder", "1") not in json.dumps(deployment["spec"]["template"])
    assert declared_in(inf.build_adapters(spec(adapters=TWO))) == inf.declared_adapters(spec(adapters=TWO))


def test_adapters_that_need_two_pull_secrets_or_two_schemes_are_pulled_by_init_containers():
    secrets = [{"name": "a", "ref": ref("a", "1"), "pull_secret": "one"}, {"name": "b", "ref": ref("b", "2"),
                                                                           "pull_secret": "two"}]
    schemes = [{"name": "a", "ref": ref("a", "1"), "plain_http": True}, {"name": "b", "ref": ref("b", "2")}]
    for adapters in (secrets, schemes):
        assert not inf.switches_in_place(spec(adapters=adapters))
        assert len(inf.build_deployment(spec(adapters=adapters))["spec"]["template"]["spec"]["initContainers"]) == 2
    assert inf.switches_in_place(spec(adapters=[*secrets[:1], {"name": "b", "ref": ref("b", "2")}]))


def test_the_generic_templates_adapters_json_switches_in_place_too(kube, kubeconfig, tmp_path):
    """What the kubectl path passes (Kaito's inference.adapters and pull-adapters' pinned refs) declares the same."""
    adapters = json.dumps([{"source": {"name": "coder", "image": f"{REPO}/coder:1"}},
                           {"source": {"name": "on-volume", "volumeSource": json.loads(PVC)}}])
    play_controller(kube, [READY], name=NAME)
    assert run_deploy(kubeconfig, tmp_path, "--adapters-json", adapters,
                      "--pinned", json.dumps({"coder": ref("coder", "1")})) == exitcodes.OK
    before = deployment(kube)
    assert run_deploy(kubeconfig, tmp_path, "--adapters-json", adapters,
                      "--pinned", json.dumps({"coder": ref("coder", "6")})) == exitcodes.OK
    assert deployment(kube)["spec"] == before["spec"] and kube.pods.restarts == 0
    assert declared(kube) == {"coder": "sha256:" + "6" * 64, "on-volume": "/adapters/on-volume"}
