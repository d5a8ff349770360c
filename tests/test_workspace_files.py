"""Workspace files are read within bounds: alias bombs, huge or deep documents and odd encodings are refused by name."""

from __future__ import annotations

import time

import pytest

from kairo.cli import main as kairo
from kairo.problems import InvalidInput
from kairo.spec import parse_workspace_text, read_workspace_file

# Nine levels of nine aliases each: 730 bytes that expand to 9⁹ (387 million) values.
ALIAS_BOMB = "\n".join(
    ['a0: &a0 ["lol"]'] + [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 10)]
)


def workspace_with(examples, extra: str) -> str:
    """The Kaito Phi-3 example with `extra` appended as an annotation block of the Workspace."""
    text = (examples / "tuning-phi-3.yaml").read_text()
    return text + "\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n" + extra


def test_an_alias_bomb_is_refused_before_anything_expands_it(examples, tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(workspace_with(examples, "  " + ALIAS_BOMB.replace("\n", "\n  ")))
    started = time.monotonic()
    assert kairo(["validate", str(path)]) == 2
    assert time.monotonic() - started < 10
    assert "more than 1,000,000 values once its YAML aliases (*name) are expanded" in capsys.readouterr().err


def test_a_few_aliases_are_still_fine(examples):
    text = (examples / "tuning-phi-3.yaml").read_text()
    text = text.replace("metadata:\n  name: workspace-tuning-phi-3", "metadata:\n  name: &n workspace-tuning-phi-3\n"
                        "  labels: {copy: *n}", 1)
    assert parse_workspace_text(text).workspace["metadata"]["labels"] == {"copy": "workspace-tuning-phi-3"}


def test_an_alias_loop_is_refused():
    with pytest.raises(InvalidInput, match="a YAML alias refers to a value that holds it"):
        parse_workspace_text("kind: Workspace\nloop: &l [*l]\n")


def test_nesting_five_thousand_deep_is_refused_without_a_traceback():
    with pytest.raises(InvalidInput, match="nested (too deep|deeper than 100 levels)"):
        parse_workspace_text("kind: Workspace\nx: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(InvalidInput, match="nested deeper than 100 levels"):
        parse_workspace_text("kind: Workspace\nx: " + "[" * 150 + "]" * 150 + "\n")


def test_a_file_of_many_megabytes_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"kind: Workspace\n" + b"# padding\n" * 900_000)
    with pytest.raises(InvalidInput, match="larger than 8 MiB"):
        read_workspace_file(path)


@pytest.mark.parametrize(("data", "found"), [
    (b"kind: Workspace\nmetadata: {name: caf\xff}\n", "byte 0xff at line 2"),
    ("kind: Workspace\nmetadata: {name: café}\n".encode("latin-1"), "byte 0xe9 at line 2"),
])
def test_a_file_that_is_not_utf8_is_refused_by_the_byte_and_line(tmp_path, data, found):
    path = tmp_path / "w.yaml"
    path.write_bytes(data)
    with pytest.raises(InvalidInput, match=f"not UTF-8 text: {found}.*save the file as UTF-8"):
        read_workspace_file(path)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "utf-32"])
def test_utf16_and_utf32_with_a_byte_order_mark_are_read_as_yaml_allows(examples, tmp_path, encoding):
    path = tmp_path / "w.yaml"
    path.write_bytes((examples / "tuning-phi-3.yaml").read_text().encode(encoding))
    assert read_workspace_file(path).workspace["metadata"]["name"] == "workspace-tuning-phi-3"


def test_validate_reports_a_latin1_file_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "w.yaml"
    path.write_bytes("kind: Workspace\nmetadata: {name: café}\n".encode("latin-1"))
    assert kairo(["validate", str(path)]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err


def test_validate_local_refuses_a_metadata_host_name_without_a_traceback(tmp_path, capsys):
    import yaml

    from tests.fixtures.workspaces import KAITO_QUICKSTART, changed

    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(changed(KAITO_QUICKSTART, tuning__input__urls=[
        "http://metadata.google.internal/computeMetadata/v1/train.jsonl"])))
    assert kairo(["validate", "--local", str(path)]) == 2
    assert "a cloud metadata address" in capsys.readouterr().err
