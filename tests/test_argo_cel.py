"""The CRDs' CEL rules (`x-kubernetes-validations`), evaluated as the Kubernetes API server evaluates them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from kairo.argo.cel import cel_problems, compile_rule, evaluate, rules_of
from kairo.argo.schema import ARGO_KINDS, OTHER_CRDS, crd_schema

FIXTURE = Path(__file__).parent / "fixtures" / "argo" / "refused-continueon-with-depends.yaml"
EVENTS = Path(__file__).parent / "schemas" / "argo-events.schema.json"
# How many rules each vendored CRD carries (a new CRD version changing this is worth a look).
RULE_COUNTS = {("argoproj.io", k): 38 for k in ARGO_KINDS} | {
    ("jobset.x-k8s.io", "JobSet"): 8, ("trainer.kubeflow.org", "TrainJob"): 20,
    ("trainer.kubeflow.org", "ClusterTrainingRuntime"): 12}


def refused_workflow() -> dict:
    return [d for d in yaml.safe_load_all(FIXTURE.read_text()) if d][-1]


def test_todays_dag_breaks_the_crds_continue_on_rule():
    problems = cel_problems(refused_workflow(), crd_schema("argoproj.io", "Workflow"))
    assert [str(p) for p in problems] == [
        "spec.templates[0].dag.tasks[4]: Invalid value: \"object\": cannot use 'continueOn' when using 'depends'",
        "spec.templates[0].dag.tasks[12]: Invalid value: \"object\": cannot use 'continueOn' when using 'depends'"]


@pytest.mark.parametrize("key", list(RULE_COUNTS), ids=lambda k: k[1])
def test_every_rule_of_every_vendored_crd_is_found_and_compiles(key):
    rules = list(rules_of(crd_schema(*key)))
    assert len(rules) == RULE_COUNTS[key]
    for rule in rules:
        compile_rule(rule.rule)
    assert set(RULE_COUNTS) == {("argoproj.io", k) for k in ARGO_KINDS} | set(OTHER_CRDS)


def test_argo_events_schema_carries_no_cel_rules():
    definitions = json.loads(EVENTS.read_text())["definitions"]
    assert sum(len(list(rules_of(d))) for d in definitions.values()) == 0


@pytest.mark.parametrize(("rule", "value", "expected"), [
    ("!has(self.depends) || !has(self.continueOn)", {"name": "a"}, True),  # has() on an absent field
    ("!has(self.depends) || !has(self.continueOn)", {"depends": "b", "continueOn": {}}, False),
    ("!self.name.matches('^[0-9]')", {"name": "2nd"}, False),
    ("self.name.matches('[0-9]')", {"name": "a1"}, True),  # matches() searches, as RE2 does
    ("size(self.metadata.name) <= 63", {"metadata": {"name": "x" * 64}}, False),
    ("!self.value.contains('resourcesDuration.')", {"value": "{{resourcesDuration.cpu}}"}, False),
    ("self.all(t, (has(t.dag) ? 1 : 0) + (has(t.container) ? 1 : 0) <= 1)", [{"dag": {}, "container": {}}], False),
    ("[has(self.torch), has(self.mpi)].filter(x, x).size() <= 1", {"torch": {}}, True),
    ("self in ['trainer.kubeflow.org/trainjob-controller', 'kueue.x-k8s.io/multikueue']", "kueue.x-k8s.io/multikueue",
     True),
    ("dyn(1) == 1.0", None, True),  # cel-go's heterogeneous equality
])
def test_cel_functions_behave_as_in_kubernetes(rule, value, expected):
    assert evaluate(rule, value) is expected


def test_reading_an_absent_field_is_an_error_as_in_kubernetes():
    with pytest.raises(Exception, match="name"):
        evaluate("self.metadata.name == 'x'", {"metadata": {}})


def test_a_rule_inside_an_array_is_evaluated_for_each_element_with_its_index():
    workflow = refused_workflow()
    tasks = workflow["spec"]["templates"][0]["dag"]["tasks"]
    index = next(i for i, t in enumerate(tasks) if t.get("depends") and "continueOn" not in t)
    tasks[index]["dependencies"] = ["provision"]  # depends and dependencies together
    problems = [str(p) for p in cel_problems(workflow, crd_schema("argoproj.io", "Workflow"))]
    assert f"spec.templates[0].dag.tasks[{index}]: Invalid value: \"object\": cannot use both 'depends' and " \
           "'dependencies'" in problems


def jobset() -> dict:
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": {"name": "train"},
            "spec": {"failurePolicy": {"maxRestarts": 1},
                     "replicatedJobs": [{"name": "node", "template": {"spec": {"template": {"spec": {
                         "containers": [{"name": "train", "image": "kairo-train"}]}}}}}]}}


def test_a_valid_jobset_passes_and_its_transition_rules_wait_for_an_update():
    # `self == oldSelf` (immutability) is checked on update only; kairo creates
    assert cel_problems(jobset(), crd_schema("jobset.x-k8s.io", "JobSet")) == []


def test_a_jobset_claim_template_with_a_namespace_is_refused():
    obj = jobset()
    obj["spec"]["volumeClaimPolicies"] = [{"templates": [{"metadata": {"name": "work", "namespace": "other"}}]}]
    assert [str(p) for p in cel_problems(obj, crd_schema("jobset.x-k8s.io", "JobSet"))] == [
        "spec.volumeClaimPolicies[0]: Invalid value: \"object\": namespace cannot be set for VolumeClaimPolicies "
        "templates"]


def test_a_trainjob_named_outside_rfc_1035_is_refused():
    obj = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {"name": "Train_1"},
           "spec": {"runtimeRef": {"name": "torch-distributed"}, "trainer": {"numNodes": 2, "numProcPerNode": 0}}}
    assert [p.message for p in cel_problems(obj, crd_schema("trainer.kubeflow.org", "TrainJob"))] == [
        "Invalid value: \"object\": metadata.name must match RFC 1035 DNS label format",
        "Invalid value: 0: numProcPerNode must be greater than or equal to 1"]


def test_a_rule_that_cannot_be_evaluated_refuses_rather_than_passes():
    schema = {"type": "object", "x-kubernetes-validations": [{"rule": "self.name.lowerAscii() == 'a'"}]}
    (problem,) = cel_problems({"name": "A"}, copy.deepcopy(schema))
    assert "could not be evaluated" in problem.message
