"""A workspace on several nodes: its train task creates a JobSet (or a Kubeflow TrainJob) that their CRDs accept."""

from __future__ import annotations

import yaml

from kairo.argo import check
from kairo.argo.checker import created_objects
from kairo.argo.schema import crd_key
from kairo.cluster import ClusterConfig
from kairo.pipelines import build_workflow, build_workflow_template
from kairo.spec import check_workspace
from tests.fixtures.workspaces import KAITO_QUICKSTART, changed

SHARED = {"storage": {"readWriteManyClassName": "azurefile-csi"}}


def cluster(**training) -> ClusterConfig:
    return ClusterConfig.model_validate({**SHARED, "training": training})


def workflow(count: int = 2, config: ClusterConfig | None = None, **changes) -> dict:
    config = config or cluster()
    checked = check_workspace(changed(KAITO_QUICKSTART, resource__count=count, **changes), config)
    assert checked.ok, checked.errors
    return build_workflow(checked.workspace, config)


def templates(obj: dict) -> dict[str, dict]:
    return {t["name"]: t for t in obj["spec"]["templates"]}


def manifest(template: dict) -> dict:
    return yaml.safe_load(template["resource"]["manifest"])


def test_two_nodes_make_train_a_resource_template_creating_a_jobset_owned_and_waited_on():
    train = templates(workflow())["train"]
    assert "container" not in train
    assert train["resource"]["action"] == "create" and train["resource"]["setOwnerReference"] is True
    assert train["resource"]["successCondition"] == "status.terminalState == Completed"
    assert train["resource"]["failureCondition"] == "status.terminalState == Failed"
    jobset = manifest(train)
    assert (jobset["apiVersion"], jobset["kind"]) == ("jobset.x-k8s.io/v1alpha2", "JobSet")
    assert jobset["metadata"]["generateName"] == "workspace-tuning-phi-3-"  # one per run; pods read it back
    assert jobset["spec"]["network"] == {"enableDNSHostnames": True}
    assert jobset["spec"]["failurePolicy"] == {"maxRestarts": 3}
    [job] = jobset["spec"]["replicatedJobs"]
    spec = job["template"]["spec"]
    assert (job["replicas"], spec["parallelism"], spec["completions"], spec["completionMode"], spec["backoffLimit"]) \
        == (1, 2, 2, "Indexed", 0)
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_each_pod_runs_the_train_arguments_under_torchrun_with_its_index_and_pod_zero_as_rendezvous():
    wf = workflow(resource__instanceType="Standard_NC24s_v3")  # 4 V100s a node
    [job] = manifest(templates(wf)["train"])["spec"]["replicatedJobs"]
    [container] = job["template"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == [
        "torchrun", "--nnodes=2", "--nproc-per-node=4", "--node-rank=$(JOB_COMPLETION_INDEX)", "--rdzv-backend=c10d",
        "--rdzv-endpoint=$(JOBSET_NAME)-node-0-0.$(JOBSET_NAME):29500", "--rdzv-id=$(JOBSET_NAME)",
        "--max-restarts=0", "-m", "kairo.steps.train"]
    one_node = templates(workflow(count=1, resource__instanceType="Standard_NC24s_v3"))["train"]["container"]
    assert container["args"] == one_node["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["JOBSET_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['jobset.sigs.k8s.io/jobset-name']"
    assert container["resources"] == one_node["resources"]  # every GPU of each node


def test_the_jobset_mounts_the_runs_work_volume_which_becomes_read_write_many_of_the_clusters_class():
    wf = workflow()
    [claim] = wf["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == "azurefile-csi"
    pod = manifest(templates(wf)["train"])["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["work"] == {"name": "work", "persistentVolumeClaim": {"claimName": "{{workflow.name}}-work"}}
    assert workflow(count=1)["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_provisioning_asks_for_every_node_and_the_exit_handler_still_releases_them():
    tmpl = templates(workflow(count=3))
    args = tmpl["provision"]["container"]["args"]
    assert args[args.index("--count") + 1] == "3"
    assert "cleanup" in {t["template"] for t in tmpl["on-exit"]["dag"]["tasks"]}


def test_the_workflow_and_the_jobset_it_creates_pass_argos_checks_and_the_jobset_crd_strictly():
    wf = workflow()
    assert check(wf) == []
    [(where, jobset)] = [(w, o) for w, o in created_objects(wf) if crd_key(o)]
    assert where.endswith(".resource.manifest") and jobset["metadata"]["name"].startswith("workspace-tuning-phi-3-")


def test_a_field_the_jobset_crd_lacks_is_refused_where_it_is():
    wf = workflow()
    train = templates(wf)["train"]
    broken = manifest(train)
    broken["spec"]["replicatedJobs"][0]["replica"] = 2
    train["resource"]["manifest"] = yaml.safe_dump(broken)
    problems = check(wf)
    assert any("replicatedJobs[0]" in p.path and "'replica'" in p.message and "(JobSet)" in p.message
               for p in problems), problems


def test_with_the_trainjob_engine_train_creates_a_trainjob_on_the_runtime_and_waits_on_its_jobset():
    wf = workflow(config=cluster(engine="trainjob", runtime="torch-distributed"))
    tmpl = templates(wf)
    assert [t["name"] for t in tmpl["train"]["dag"]["tasks"]] == ["create", "wait"]
    trainjob = manifest(tmpl["train-create"])
    assert (trainjob["apiVersion"], trainjob["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert trainjob["spec"]["runtimeRef"]["name"] == "torch-distributed"
    trainer = trainjob["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["command"] == ["torchrun", "-m", "kairo.steps.train"]
    assert tmpl["train-create"]["resource"]["setOwnerReference"] is True
    wait = tmpl["train-wait"]["resource"]
    assert wait["action"] == "patch" and wait["successCondition"] == "status.terminalState == Completed"
    assert manifest(tmpl["train-wait"])["kind"] == "JobSet"
    assert check(wf) == []
    assert {o["kind"] for _, o in created_objects(wf)} == {"TrainJob", "JobSet"}


def test_the_generic_template_keeps_one_node():
    tmpl = templates(build_workflow_template(cluster()))
    assert "container" in tmpl["train"]
