"""The record of deployed adapters: kept on the Service's annotations, listed by `kairo history`."""

from __future__ import annotations

import json

import pytest

from kairo.cli import main
from kairo.clients import kube as k
from kairo.manifests import inference as inf

NS = "ml"
NAME = "phi3"


def adapter(n: int, **more) -> inf.DeployedAdapter:
    digest = "sha256:" + f"{n:x}".ljust(64, "0")
    return inf.DeployedAdapter(ref=f"acr.io/team/phi3@{digest}", digest=digest, deployed_at=f"2026-01-0{n}T00:00:00Z",
                               **more)


def test_the_record_reads_back_what_was_written():
    first, second = adapter(1, eval_loss="1.4"), adapter(2, eval_loss="1.1", dataset_digest="sha256:" + "d" * 64)
    annotations = inf.record_annotations(second, inf.with_entry([], first))
    current, history = inf.read_record(annotations)
    assert current == second
    assert history == [second, first]
    assert annotations[inf.EVAL_LOSS] == "1.1" and annotations[inf.DATASET_DIGEST] == "sha256:" + "d" * 64


def test_nothing_recorded_means_nothing_deployed():
    assert inf.read_record(None) == (None, [])
    assert inf.read_record({inf.HISTORY: "not json"}) == (None, [])


def test_the_history_is_bounded_and_a_redeploy_does_not_repeat_itself():
    history: list[inf.DeployedAdapter] = []
    for n in range(1, 30):
        history = inf.with_entry(history, adapter(n % 9 + 1))
    assert len(history) == inf.HISTORY_LIMIT
    assert history[0].digest == adapter(3).digest  # the last of the loop: 29 % 9 + 1
    again = inf.with_entry(history, adapter(3, note="again"))
    assert len(again) == len(history) and again[0].note == "again" and again[1:] == history[1:]


@pytest.mark.parametrize("target", ["sha256:" + "2" + "0" * 63, "2000000", "release-2", "20260102-2000000"])
def test_a_rollback_target_is_a_digest_a_prefix_or_a_tag(target):
    history = [adapter(3), adapter(2, tag="release-2"), adapter(1)]
    assert inf.find_in_history(history, target) == history[1]


def test_an_unknown_target_lists_what_is_known():
    with pytest.raises(inf.NotInHistory, match="known: release-2"):
        inf.find_in_history([adapter(2, tag="release-2")], "release-9")


def test_kairo_history_lists_deployed_adapters_newest_first(kube, kubeconfig, capsys):
    first, second = adapter(1, eval_loss="1.42", workflow="kairo-tuning-a"), adapter(2, eval_loss="1.17")
    k.create(kube.api, {"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": NAME, "namespace": NS, "annotations": inf.record_annotations(second, [first])}, "spec": {}})
    assert main(["history", NAME, "-n", NS, "--kubeconfig", str(kubeconfig)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["DEPLOYED", "DIGEST", "TAG", "EVAL", "LOSS", "DATASET", "WORKFLOW", "NOTE"]
    assert lines[1].split()[:4] == ["*", "2026-01-02T00:00:00Z", "sha256:200000000000", "1.17"]
    assert lines[2].split() == ["2026-01-01T00:00:00Z", "sha256:100000000000", "1.42", "kairo-tuning-a"]


def test_kairo_history_json_for_scripts(kube, kubeconfig, capsys):
    k.create(kube.api, {"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": NAME, "namespace": NS, "annotations": inf.record_annotations(adapter(1, eval_loss="1.3"), [])}})
    assert main(["history", NAME, "-n", NS, "--kubeconfig", str(kubeconfig), "-o", "json"]) == 0
    assert [e["eval_loss"] for e in json.loads(capsys.readouterr().out)] == ["1.3"]


def test_kairo_history_of_a_local_run(tmp_path, capsys):
    from kairo.local import server as local_server

    local_server.write_deployed(tmp_path, {"current": adapter(1).to_dict(), "history": [adapter(1).to_dict()]})
    assert main(["history", NAME, "--local", "--workdir", str(tmp_path), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["digest"] == adapter(1).digest
