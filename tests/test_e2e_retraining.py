"""Issue 9 end to end: retraining never ships a worse adapter — four `kairo run --local` on one run directory.

1. the first run deploys (nothing deployed yet: it always proceeds) and moves output.image's tag to it;
2. the same data again: training is skipped, nothing is pushed or deployed;
3. the answers shuffled across the questions (a new digest): the new adapter is trained, judged worse on
   the held-out rows, and not shipped — the run succeeds saying "kept the current adapter (eval loss X vs Y)";
4. `--force` and more training on the good data: a better adapter, deployed, and the moving tag follows it.

The held-out rows (the last rows of the file: `shuffle_dataset: false`) are correct answers to questions
the training rows also ask. A tiny random model cannot answer an unseen question, so "better" is only
measurable on questions it was taught; the shuffled runs teach it wrong answers to those same questions.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.fixtures.adapter import CAPITALS, capital_rows
from tests.fixtures.http import jsonl_bytes
from tests.fixtures.local_run import (
    kairo,
    kairo_run,
    manifest,
    registry_cluster_config,
    training_config,
    write_workspace,
)

pytestmark = [pytest.mark.slow, pytest.mark.registry]

REPOSITORY = "e2e/retrain-adapter"
HELD_OUT = capital_rows()[:6]  # evaluated every run, always with the right answers
GOOD = jsonl_bytes(capital_rows() + HELD_OUT)
SHUFFLED = jsonl_bytes(capital_rows([c for _, c in CAPITALS[1:] + CAPITALS[:1]]) + HELD_OUT)
SPLIT = {"shuffle_dataset": False, "train_test_split": 0.7}  # 20 rows: 14 train, the last 6 held out


class Retraining:
    """One workspace, one run directory, a dataset URL whose content changes between runs."""

    def __init__(self, tmp, http, registry):
        self.tmp, self.http, self.registry = tmp, http, registry
        self.run_dir = tmp / "run"
        self.cluster = registry_cluster_config(tmp / "cluster.yaml", registry.host)
        self.count = 0

    def run(self, data: bytes, steps: int, *flags: str):
        self.count += 1
        url = self.http.serve("qa.jsonl", data)
        path = write_workspace(self.tmp / f"retrain-{self.count}.yaml", "retrain", input={"urls": [url]},
                               output={"image": f"{self.registry.host}/{REPOSITORY}:live"},
                               config=training_config("retrain-tuning", max_steps=steps, dataset=SPLIT))
        run = kairo_run(path, self.run_dir, "--cluster-config", str(self.cluster), *flags)
        assert run.code == 0, run.explain()
        return run

    def tags(self) -> list[str]:
        return sorted(self.registry.tags(REPOSITORY))

    def live(self) -> str:
        return manifest(self.registry.url, REPOSITORY, "live")[0]


@pytest.fixture(scope="module")
def retraining(tmp_path_factory, http_server, registry):
    return Retraining(tmp_path_factory.mktemp("retraining"), http_server.scoped("retraining"), registry)


@pytest.fixture(scope="module")
def first(retraining):
    run = retraining.run(GOOD, 100)
    return run, retraining.tags(), run.deployed()


@pytest.fixture(scope="module")
def unchanged(retraining, first):
    return retraining.run(GOOD, 100), retraining.tags()


@pytest.fixture(scope="module")
def shuffled(retraining, unchanged):
    return retraining.run(SHUFFLED, 100), retraining.tags()


@pytest.fixture(scope="module")
def better(retraining, shuffled):
    return retraining.run(GOOD, 200, "--force"), retraining.tags()


def digest_of(record: dict) -> str:
    return record["current"]["digest"]


def test_the_first_run_always_deploys_and_moves_the_tag(first, retraining):
    run, tags, deployed = first
    assert "nothing deployed yet: deploying" in run.log("evaluate")
    assert run.states["deploy"] == run.states["smoke"] == "Succeeded"
    assert "live" in tags and len(tags) == 2  # the moving tag and one immutable tag
    assert manifest(retraining.registry.url, REPOSITORY, "live")[0] == digest_of(deployed)


def test_unchanged_data_skips_training_and_pushes_nothing(first, unchanged):
    _, tags_before, deployed = first
    run, tags = unchanged
    assert "unchanged" in run.log("download")
    skipped = ("train", "evaluate", "push", "deploy", "smoke")
    assert {t: run.states[t] for t in skipped} == dict.fromkeys(skipped, "Skipped")
    assert tags == tags_before
    assert run.deployed() == deployed


def test_an_adapter_trained_on_shuffled_answers_is_not_shipped(first, shuffled):
    _, tags_before, deployed = first
    run, tags = shuffled
    assert run.states["train"] == run.states["evaluate"] == "Succeeded"
    assert {t: run.states[t] for t in ("push", "deploy", "smoke")} == dict.fromkeys(("push", "deploy", "smoke"),
                                                                                      "Skipped")
    assert tags == tags_before
    assert digest_of(run.deployed()) == digest_of(deployed)


def test_keeping_the_current_adapter_is_said_to_the_user(shuffled):
    run, _ = shuffled
    # at the end of the run, among the workflow's outputs (what the Argo UI shows as `evaluation`)
    kept = re.search(r"^kairo: evaluation: kept the current adapter \(eval loss ([\d.]+) vs ([\d.]+)\)$", run.stderr,
                     re.MULTILINE)
    assert kept, run.explain()
    assert float(kept.group(1)) > float(kept.group(2))


def test_history_still_names_the_first_adapter_after_a_kept_run(first, shuffled):
    _, _, deployed = first
    run, _ = shuffled
    listed = kairo("history", "retrain", "--local", "--workdir", str(run.run_dir), "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [entry["digest"] for entry in json.loads(listed.stdout)] == [digest_of(deployed)]


def test_a_better_adapter_is_deployed_and_the_moving_tag_follows_it(first, better, retraining):
    _, tags_before, deployed = first
    run, tags = better
    assert run.states["train"] == "Succeeded" and run.states["deploy"] == run.states["smoke"] == "Succeeded"
    assert "deploying the new adapter" in run.log("evaluate")
    now = run.deployed()
    assert digest_of(now) != digest_of(deployed)
    assert retraining.live() == digest_of(now)
    assert set(tags_before) < set(tags) and len(tags) == 3  # a new immutable tag beside the first
    assert [e["digest"] for e in now["history"]] == [digest_of(now), digest_of(deployed)]
