"""`download --image`: a Kaito-style dataset image (files under /data) from a real registry becomes chat rows."""

from __future__ import annotations

import hashlib
import json
import socket

import pytest

from kairo import exitcodes
from kairo.step import main as kairo_step
from tests.fixtures.http import jsonl_bytes, parquet_bytes
from tests.fixtures.oci_images import image_layout, skopeo_copy, tar_layer

pytestmark = pytest.mark.registry

ROWS = [{"instruction": f"Spell {w}.", "input": "", "output": "-".join(w)} for w in ("cat", "dog", "owl", "bee")]


def download(tmp_path, *args: str) -> int:
    return kairo_step(["download", *args, "--workdir", str(tmp_path / "work"), "--outputs", str(tmp_path / "out"),
                       "--local", "--retries", "0", "--backoff", "0.01"])


def push(tmp_path, ref: str, layers: list[bytes], creds: str | None = None) -> str:
    skopeo_copy(image_layout(tmp_path / "layout", layers), ref, creds=creds)
    return ref


def test_a_kaito_dataset_image_is_pulled_and_normalised(tmp_path, registry, monkeypatch):
    monkeypatch.delenv("KAIRO_CLUSTER_CONFIG", raising=False)
    jsonl, parquet = jsonl_bytes(ROWS), parquet_bytes(ROWS)
    base = tar_layer({"bin/sh": b"\x7fELF", "data/a.jsonl": jsonl, "data/old.csv": b"x\n"}, dirs=("data",))
    update = tar_layer({"data/b.parquet": parquet}, whiteouts=("data/.wh.old.csv",))
    ref = push(tmp_path, f"{registry.host}/datasets/spelling:v1", [base, update])
    assert download(tmp_path, "--image", ref) == exitcodes.OK
    out = tmp_path / "out"
    assert (out / "rows").read_text() == "8" and (out / "dropped").read_text() == "0"
    assert (out / "digest").read_text() == "sha256:" + hashlib.sha256(jsonl + parquet).hexdigest()
    summary = json.loads((tmp_path / "work" / "data" / "dataset.json").read_text())
    assert [s["file"] for s in summary["sources"]] == ["raw/a.jsonl", "raw/b.parquet"]
    assert summary["sources"][0]["source"] == f"{ref}:a.jsonl"
    first = json.loads((tmp_path / "work" / "data" / "train.jsonl").read_text().splitlines()[0])
    assert first["messages"][0]["role"] == "user" and first["messages"][1]["role"] == "assistant"


def test_a_layer_escaping_data_fails_as_bad_input_and_leaves_no_data(tmp_path, registry, capsys):
    good = tar_layer({"data/a.jsonl": jsonl_bytes(ROWS)})
    evil = tar_layer(symlinks={"data/passwd.jsonl": "/etc/passwd"})
    ref = push(tmp_path, f"{registry.host}/datasets/escape:v1", [good, evil])
    assert download(tmp_path, "--image", ref) == exitcodes.BAD_INPUT
    assert "outside /data" in capsys.readouterr().err
    assert not (tmp_path / "work" / "data").exists()


def test_a_private_image_needs_its_pull_secret(tmp_path, auth_registry):
    ref = push(tmp_path, f"{auth_registry.host}/datasets/private:v1",
               [tar_layer({"data/a.jsonl": jsonl_bytes(ROWS)})], creds="kairo:s3cret-pass")
    assert download(tmp_path, "--image", ref) == exitcodes.BAD_INPUT
    secret = auth_registry.dockerconfig(tmp_path / "secret")
    assert download(tmp_path, "--image", ref, "--pull-secret-file", str(secret)) == exitcodes.OK


def test_a_missing_image_is_bad_input(tmp_path, registry):
    assert download(tmp_path, "--image", f"{registry.host}/datasets/none:v9") == exitcodes.BAD_INPUT


def test_a_registry_that_does_not_answer_is_transient(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    assert download(tmp_path, "--image", f"127.0.0.1:{port}/datasets/x:v1") == exitcodes.TRANSIENT


def test_a_pull_secret_that_is_not_mounted_means_a_public_image(tmp_path, registry, capsys):
    ref = push(tmp_path, f"{registry.host}/datasets/public:v1", [tar_layer({"data/a.jsonl": jsonl_bytes(ROWS)})])
    assert download(tmp_path, "--image", ref, "--url", "", "--pull-secret-file", str(tmp_path / "absent")) == 0
    assert f"no pull secret at {tmp_path / 'absent'}; pulling {ref} without credentials" in capsys.readouterr().err
