"""The Argo versions kairo claims, each checked from its own evidence.

- 4.1: the vendored v4.1.2 full CRDs (strict schema and CEL rules).
- 4.0: Hera 7.1.0's models (generated from Argo v4.0.5's schema; v4.0.10's swagger.json has the same fields), and
  the CEL rules: v4.0.10's full CRDs carry the same 38 rules per kind as v4.1.2's (same paths, rules, messages;
  `manifests/base/crds/full/argoproj.io_*.yaml` at tags v4.0.10 and v4.1.2, compared below where the source is at
  hand).
- 3.7, 3.6: Argo's own SDK, argo-workflows 6.7.18 and 6.6.19 (the SDK's version is Argo's plus 3 on the major,
  `sdks/python/sdk_version.py`); its models match `api/openapi-spec/swagger.json` at v3.7.18 and v3.6.19 field for
  field. Their full CRDs carry no CEL rules.
Set KAIRO_ARGO_REPO to a git clone of argoproj/argo-workflows to rerun the comparisons with Argo's source.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from kairo.argo import check
from kairo.argo.cel import rules_of
from kairo.argo.schema import SCHEMAS, crd_schema
from kairo.argo.versions import CLAIMED, field_problems, field_tables, minor
from tests.fixtures.argo_fields import SOURCES, build
from tests.fixtures.argo_objects import spec_of, workflow

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "argo" / "refused-continueon-with-depends.yaml"
REPO = os.environ.get("KAIRO_ARGO_REPO", "")
CRD_FILES = {"Workflow": "workflows", "WorkflowTemplate": "workflowtemplates", "CronWorkflow": "cronworkflows",
             "ClusterWorkflowTemplate": "clusterworkflowtemplates"}


def test_the_field_tables_are_those_of_the_pinned_pypi_wheels():
    if os.environ.get("KAIRO_REGENERATE"):
        (SCHEMAS / "argo-fields.json").write_text(json.dumps(build(), separators=(",", ":")) + "\n")
        field_tables.cache_clear()
    table = field_tables()
    assert {v: e["source"] for v, e in table.items()} == {v: f"{p} {n}" for v, (p, n) in SOURCES.items()}
    assert set(table) | {CLAIMED[-1]} == set(CLAIMED)


def test_argo_3_6_does_not_know_backoff_cap_and_3_7_does():
    old = [d for d in yaml.safe_load_all(FIXTURE.read_text()) if d][-1]
    assert {p.path.rsplit(".", 1)[-1] for p in field_problems(old, "3.6.19")} == {"cap"}
    assert field_problems(old, "3.7.18") == []


def test_a_field_only_the_newest_argo_knows_is_refused_naming_each_version_without_it():
    obj = workflow()
    spec_of(obj)["podResources"] = {"limits": {"cpu": "8"}}  # Argo 4.1's pod-level resources
    (problem,) = [p for p in check(obj) if p.path == "spec.podResources"]
    assert "Argo 3.6.19 (per argo-workflows 6.6.19), 3.7.18 (per argo-workflows 6.7.18), 4.0.10 (per hera 7.1.0)" \
           in problem.message


def test_checking_for_one_version_leaves_the_others_out():
    obj = workflow()
    spec_of(obj)["podResources"] = {"limits": {"cpu": "8"}}
    assert check(obj, versions=["4.1.2"]) == []


def test_the_readme_claims_exactly_the_checked_versions():
    readme = (ROOT / "README.md").read_text()
    paragraph = next(p for p in readme.split("\n\n") if p.startswith("Prerequisites: Argo Workflows"))
    for version in CLAIMED:
        assert minor(version) in paragraph and version in paragraph, version


def _git_show(tag: str, path: str) -> str:
    return subprocess.run(["git", "-C", REPO, "show", f"{tag}:{path}"], check=True, capture_output=True,
                          text=True).stdout


def _crd_rules(tag: str, kind: str) -> set[tuple[str, str, str]]:
    text = _git_show(tag, f"manifests/base/crds/full/argoproj.io_{CRD_FILES[kind]}.yaml")
    crd = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schema = next(v for v in crd["spec"]["versions"] if v.get("storage"))["schema"]["openAPIV3Schema"]
    return {(r.where, r.rule, r.message) for r in rules_of(schema)}


@pytest.mark.skipif(not REPO, reason="KAIRO_ARGO_REPO (a clone of argoproj/argo-workflows) is not set")
@pytest.mark.parametrize("kind", list(CRD_FILES))
def test_argo_4_0_10_crds_carry_the_same_cel_rules_as_4_1_2(kind):
    vendored = {(r.where, r.rule, r.message) for r in rules_of(crd_schema("argoproj.io", kind))}
    assert _crd_rules("v4.0.10", kind) == _crd_rules("v4.1.2", kind) == vendored


@pytest.mark.skipif(not REPO, reason="KAIRO_ARGO_REPO (a clone of argoproj/argo-workflows) is not set")
@pytest.mark.parametrize("tag", ["v3.6.19", "v3.7.18"])
def test_argo_3_crds_carry_no_cel_rules(tag):
    assert all(_crd_rules(tag, kind) == set() for kind in CRD_FILES)


@pytest.mark.skipif(not REPO, reason="KAIRO_ARGO_REPO (a clone of argoproj/argo-workflows) is not set")
@pytest.mark.parametrize(("version", "tag"), [("3.6.19", "v3.6.19"), ("3.7.18", "v3.7.18"), ("4.0.10", "v4.0.10")])
def test_each_field_table_matches_that_argo_releases_swagger(version, tag):
    definitions = json.loads(_git_show(tag, "api/openapi-spec/swagger.json"))["definitions"]
    table = field_tables()[version]["types"]
    for name, fields in table.items():
        swagger = name if name in definitions else "io.argoproj.workflow.v1alpha1." + name.removeprefix(
            "IoArgoprojWorkflowV1alpha1")
        if swagger in definitions and name.startswith(("io.argoproj", "IoArgoproj")):
            expected = set(definitions[swagger].get("properties") or {}) - ({"status"} if name.endswith(
                tuple(CRD_FILES)) else set())
            assert set(fields) == expected, name
