"""The README keeps its promises: the two opening commands, and a reference row for every Workspace field."""

from __future__ import annotations

from pathlib import Path

from kairo.spec import ANNOTATIONS, iter_fields

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SERVER_SET = {"generateName", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
              "deletionGracePeriodSeconds", "managedFields", "ownerReferences", "finalizers", "selfLink"}


def test_the_readme_opens_with_make_demo_and_make_test():
    opening = "\n".join(README.splitlines()[:8])
    assert "make demo" in opening and "make test" in opening


def test_every_workspace_field_is_in_the_reference():
    paths = [p for p, _ in iter_fields() if p.split(".")[-1] not in SERVER_SET]
    assert len(paths) > 30
    def documented(path: str) -> bool:
        parent, _, leaf = path.rpartition(".")
        return f"`{path}" in README or (f"`{parent}" in README and f"`{leaf}`" in README)

    missing = [p for p in paths if not documented(p)]
    assert missing == []


def test_every_kairo_annotation_is_documented():
    assert [key for key in ANNOTATIONS if f"`{key}`" not in README] == []
