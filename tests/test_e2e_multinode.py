"""The quickstart with `resource.count: 2` through `kairo run --local`: its train task a JobSet of two pods.

The file as written (its data in a ConfigMap) but for two nodes, a shorter training (the same config, 12 steps
instead of 100 epochs: two gloo ranks share this machine's cores) and the adapter going to the registry fixture.
The JobSet's two pods run torchrun's rendezvous on 127.0.0.1; every later step reads the adapter rank 0 saved.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import EXAMPLES
from tests.fixtures.local_run import kairo_run, registry_cluster_config

pytestmark = [pytest.mark.slow, pytest.mark.registry]


def test_the_quickstart_on_two_nodes_runs_end_to_end(tmp_path, registry):
    documents = [d for d in yaml.safe_load_all((EXAMPLES / "quickstart.yaml").read_text()) if d]
    workspace = documents[-1]
    workspace["resource"]["count"] = 2
    workspace["tuning"]["output"] = {"image": f"{registry.host}/e2e/multinode-adapter:latest"}
    config = next(d for d in documents if d["metadata"]["name"] == workspace["tuning"]["config"])
    training = yaml.safe_load(config["data"]["training_config.yaml"])
    training["training_config"]["TrainingArguments"].update(max_steps=12, per_device_train_batch_size=4)
    config["data"]["training_config.yaml"] = yaml.safe_dump(training)
    path = tmp_path / "quickstart-2.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    cluster = registry_cluster_config(tmp_path / "cluster.yaml", registry.host)

    run = kairo_run(path, tmp_path / "run", "--cluster-config", str(cluster), timeout=900)
    assert run.code == 0, run.stderr[-4000:]
    assert run.states["train"] == "Succeeded" and run.states["smoke"] == "Succeeded", run.states
    pods = sorted(p.name for p in (run.run_dir / "tasks" / "train").iterdir() if p.is_dir())
    assert len(pods) == 2 and pods[0].startswith("quickstart-") and pods[0].endswith("-node-0-0")
    logs = {p: (run.run_dir / "tasks" / "train" / p / "log.txt").read_text() for p in pods}
    assert all("--rdzv-endpoint=127.0.0.1:" in log and "--nnodes=2" in log for log in logs.values())
    assert "done: 12 steps" in logs[pods[0]] and "done:" not in logs[pods[1]]  # rank 0 saves
    record = json.loads((run.work / "adapter" / "kairo.json").read_text())
    assert record["metrics"]["steps"] == 12
