"""`kairo-step push`: the adapter becomes one OCI artifact in a real registry (or a layout, or a volume copy)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from kairo.clients import oci
from kairo.oci import artifact
from kairo.steps import push
from tests.fixtures.oci_images import CREATED, skopeo_raw, write_adapter
from tests.fixtures.outputs import step_outputs

pytestmark = pytest.mark.registry


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_push(tmp_path, *args: str) -> tuple[int, dict[str, str]]:
    outputs = tmp_path / "outputs"
    code = push.main([*args, "--workdir", str(tmp_path / "work"), "--outputs", str(outputs)])
    return code, step_outputs(outputs)


@pytest.fixture
def workdir_adapter(tmp_path):
    return write_adapter(tmp_path / "work" / "adapter")


def test_push_writes_digest_ref_and_immutable_tag(tmp_path, registry, workdir_adapter, capsys):
    code, outputs = run_push(tmp_path, "--image", f"{registry.host}/push/outputs", "--plain-http")
    assert code == 0
    digest = outputs["digest"]
    assert digest.startswith("sha256:") and capsys.readouterr().out.strip() == digest
    assert outputs["ref"] == f"{registry.host}/push/outputs@{digest}"
    assert outputs["tag"] == f"20250314-{digest[7:19]}"  # the date of kairo.json's `created`
    assert registry.tags("push/outputs") == [outputs["tag"]]


def test_the_same_adapter_pushed_twice_gives_the_same_digest(tmp_path, registry, workdir_adapter):
    first = oci.push_adapter(workdir_adapter, f"{registry.host}/push/twice", oci.RegistryAccess(plain_http=True))
    time.sleep(1.1)  # nothing time-dependent may come from the push itself
    second = oci.push_adapter(workdir_adapter, f"{registry.host}/push/twice", oci.RegistryAccess(plain_http=True))
    assert first == second
    assert oci.resolve(f"{registry.host}/push/twice:{first.tag}", oci.RegistryAccess(plain_http=True)) == first.digest


def test_skopeo_reads_the_image_and_its_annotations(tmp_path, registry, workdir_adapter):
    code, outputs = run_push(tmp_path, "--image", f"{registry.host}/push/skopeo:0.0.1", "--plain-http",
                             "--annotation", "org.opencontainers.image.source=https://example.com/kairo",
                             "--annotation", "kairo.sh/preset=overridden")
    assert code == 0
    manifest = skopeo_raw(f"docker://{registry.host}/push/skopeo:{outputs['tag']}")
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["annotations"] == {
        "org.opencontainers.image.created": CREATED,
        "org.opencontainers.image.source": "https://example.com/kairo",
        "kairo.sh/base-model": "kairo/tiny-llama-test",
        "kairo.sh/preset": "overridden",
        "sh.kaito.model.name": "overridden",  # Kaito's name for the preset follows kairo's
        "kairo.sh/method": "qlora",
        "kairo.sh/dataset-digest": "sha256:" + "ab" * 32,
    }
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"]


def test_pushing_sets_only_the_immutable_tag_not_the_moving_one(tmp_path, registry, workdir_adapter, capsys):
    code, outputs = run_push(tmp_path, "--image", f"{registry.host}/push/moving:stable", "--plain-http")
    assert code == 0
    assert registry.tags("push/moving") == [outputs["tag"]]
    assert "moved by deploy" in capsys.readouterr().err


def test_push_with_basic_auth_from_the_mounted_secret(tmp_path, auth_registry, workdir_adapter):
    secret = auth_registry.dockerconfig(tmp_path / "secret")
    code, outputs = run_push(tmp_path, "--image", f"{auth_registry.host}/push/auth", "--plain-http",
                             "--push-secret-file", str(secret))
    assert code == 0
    assert auth_registry.tags("push/auth") == [outputs["tag"]]


def test_a_wrong_password_is_a_clear_error_and_leaves_no_tag(tmp_path, auth_registry, workdir_adapter, capsys):
    secret = auth_registry.dockerconfig(tmp_path / "secret", password="wrong-horse-battery")
    start = time.monotonic()
    code, outputs = run_push(tmp_path, "--image", f"{auth_registry.host}/push/refused", "--plain-http",
                             "--push-secret-file", str(secret))
    err = capsys.readouterr().err
    assert code == 2 and outputs == {}
    assert "refused the credentials for user 'kairo'" in err
    assert "wrong-horse-battery" not in err and "s3cret-pass" not in err
    assert auth_registry.tags("push/refused") == []
    assert time.monotonic() - start < 10  # no long retry on a refusal


def test_no_secret_for_a_password_registry_says_so(tmp_path, auth_registry, workdir_adapter, capsys):
    code, _ = run_push(tmp_path, "--image", f"{auth_registry.host}/push/anonymous", "--plain-http")
    assert code == 2
    assert "needs credentials and no registry secret was given" in capsys.readouterr().err


def test_an_unreachable_registry_is_transient_after_a_short_retry(tmp_path, workdir_adapter, capsys, caplog):
    start = time.monotonic()
    code, outputs = run_push(tmp_path, "--image", f"127.0.0.1:{closed_port()}/push/down", "--plain-http",
                             "--retries", "2", "--retry-wait", "0.1")
    err = capsys.readouterr().err
    assert code == 75 and outputs == {}
    assert "does not answer" in err
    assert [r.message.rsplit(" — ", 1)[1] for r in caplog.records] == ["retrying in 0.1 s (1 of 2)", "retrying in 0.2 s (2 of 2)"]
    assert time.monotonic() - start < 10


def test_locally_a_registry_that_answers_gets_the_push(tmp_path, registry, workdir_adapter, capsys, monkeypatch):
    monkeypatch.setenv("KAIRO_LOCAL", "1")  # as `kairo run --local` sets it; loopback counts as plain HTTP then
    code, outputs = run_push(tmp_path, "--image", f"{registry.host}/push/local")
    assert code == 0 and outputs["ref"].startswith(registry.host)
    assert not (tmp_path / "work" / "outputs" / "oci").exists()


def test_locally_a_registry_that_is_down_gives_an_oci_layout(tmp_path, workdir_adapter, capsys):
    code, outputs = run_push(tmp_path, "--image", f"127.0.0.1:{closed_port()}/push/fallback", "--local")
    layout = tmp_path / "work" / "outputs" / "oci"
    assert code == 0
    assert "does not answer — wrote the adapter to the OCI layout" in capsys.readouterr().err
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    # The same manifest a registry push sends: same digest, and skopeo reads it from the layout.
    assert outputs["digest"] == artifact.adapter_artifact(workdir_adapter).digest
    assert outputs["ref"] == f"{layout.resolve()}@{outputs['digest']}"
    manifest = skopeo_raw(f"oci:{layout}:{outputs['tag']}")
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    for layer in manifest["layers"]:
        assert (layout / "blobs" / "sha256" / layer["digest"][7:]).stat().st_size == layer["size"]


def test_volume_path_copies_the_adapter_with_the_same_digest(tmp_path, workdir_adapter):
    volume = tmp_path / "volume"
    volume.mkdir()
    code, outputs = run_push(tmp_path, "--volume-path", str(volume))
    assert code == 0
    assert outputs["digest"] == artifact.adapter_artifact(workdir_adapter).digest
    copy = volume / outputs["tag"]
    assert outputs["ref"] == str(copy)
    assert {p.name: p.read_bytes() for p in copy.iterdir() if not p.name.startswith(".")} == {
        p.name: p.read_bytes() for p in workdir_adapter.iterdir()}
    assert artifact.bytes_digest((copy / ".oci-manifest.json").read_bytes()) == outputs["digest"]
    assert [p.name for p in volume.iterdir()] == [outputs["tag"]]  # no temp folder left behind


def test_a_missing_adapter_is_bad_input(tmp_path, registry, capsys):
    code, _ = run_push(tmp_path, "--image", f"{registry.host}/push/none", "--plain-http")
    assert code == 2
    assert "no adapter folder here" in capsys.readouterr().err


def test_a_malformed_annotation_is_bad_input(tmp_path, workdir_adapter, capsys):
    code, _ = run_push(tmp_path, "--image", "127.0.0.1:5000/push/x", "--annotation", "no-equals-sign")
    assert code == 2
    assert "--annotation: 'no-equals-sign' — expected KEY=VALUE" in capsys.readouterr().err


def test_created_comes_from_kairo_json_and_dates_the_tag(tmp_path):
    folder = write_adapter(tmp_path / "a", created="2026-01-02T23:30:00-02:00")
    described = artifact.adapter_artifact(folder)
    assert described.tag.startswith("20260103-")  # in UTC
    assert described.annotations["org.opencontainers.image.created"] == "2026-01-02T23:30:00-02:00"


def test_hidden_files_are_not_part_of_the_artifact(tmp_path):
    folder = write_adapter(tmp_path / "a")
    before = artifact.adapter_artifact(folder).digest
    (folder / ".kairo.json.123.tmp").write_text("half written")
    assert artifact.adapter_artifact(folder).digest == before


def test_a_large_file_goes_up_in_chunks_and_round_trips(tmp_path, registry, workdir_adapter, monkeypatch):
    from kairo.clients import oci_transport

    # The thresholds shrunk so the 9 kB weights take the chunked path (PATCH, PATCH…, PUT).
    monkeypatch.setattr(oci_transport, "MONOLITHIC_UPLOAD", 1000)
    monkeypatch.setattr(oci_transport, "UPLOAD_CHUNK", 4096)
    result = oci.push_adapter(workdir_adapter, f"{registry.host}/push/chunked", oci.RegistryAccess(plain_http=True))
    oci.pull_adapter(result.ref, tmp_path / "out", oci.RegistryAccess(plain_http=True))
    assert (tmp_path / "out" / "adapter_model.safetensors").read_bytes() == (
        workdir_adapter / "adapter_model.safetensors").read_bytes()
