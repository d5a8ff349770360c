"""`kairo-step pull-adapter REF DIR`: the inference pod's init container gets the adapter back, byte for byte."""

from __future__ import annotations

import json
import socket

import pytest

from kairo.clients import oci
from kairo.steps import pull_adapter
from tests.fixtures.oci_images import files_in, image_layout, skopeo_copy, tar_layer, write_adapter

pytestmark = pytest.mark.registry


@pytest.fixture
def pushed(registry, adapter_folder):
    """The adapter folder and what pushing it to the anonymous registry gave."""
    return adapter_folder, oci.push_adapter(adapter_folder, f"{registry.host}/pull/adapter", oci.RegistryAccess(plain_http=True))


def test_pull_by_digest_round_trips_byte_for_byte(tmp_path, pushed):
    folder, result = pushed
    assert pull_adapter.main([result.ref, str(tmp_path / "adapters" / "ws"), "--plain-http"]) == 0
    assert files_in(tmp_path / "adapters" / "ws") == files_in(folder)


def test_pull_by_tag_round_trips_byte_for_byte(tmp_path, registry, pushed):
    folder, result = pushed
    ref = f"{registry.host}/pull/adapter:{result.tag}"
    assert pull_adapter.main([ref, str(tmp_path / "out"), "--plain-http"]) == 0
    assert files_in(tmp_path / "out") == files_in(folder)


def test_oras_reads_the_pushed_adapter_too(tmp_path, registry, pushed):
    import oras.client

    folder, result = pushed
    client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    client.pull(target=f"{registry.host}/pull/adapter:{result.tag}", outdir=str(tmp_path / "oras"))
    assert files_in(tmp_path / "oras") == {f"data/{name}": data for name, data in files_in(folder).items()}


def test_pull_with_the_mounted_pull_secret(tmp_path, auth_registry, adapter_folder):
    secret = auth_registry.dockerconfig(tmp_path / "secret")
    result = oci.push_adapter(adapter_folder, f"{auth_registry.host}/pull/private", oci.RegistryAccess(auth_file=secret, plain_http=True))
    code = pull_adapter.main([result.ref, str(tmp_path / "out"), "--plain-http", "--pull-secret-file", str(secret)])
    assert code == 0 and files_in(tmp_path / "out") == files_in(adapter_folder)


def test_the_folder_is_replaced_whole_and_no_temp_folder_stays(tmp_path, pushed):
    folder, result = pushed
    dest = tmp_path / "adapters" / "ws"
    dest.mkdir(parents=True)
    (dest / "stale.bin").write_bytes(b"from an older adapter")
    oci.pull_adapter(result.ref, dest, oci.RegistryAccess(plain_http=True))
    assert files_in(dest) == files_in(folder)
    assert [p.name for p in dest.parent.iterdir()] == ["ws"]


def test_a_container_image_without_an_adapter_is_refused_with_a_clear_message(tmp_path, registry, capsys):
    layout = image_layout(tmp_path / "image", [tar_layer({"data/train.jsonl": b"{}\n"})])
    skopeo_copy(layout, f"{registry.host}/pull/an-image:v1")
    code = pull_adapter.main([f"{registry.host}/pull/an-image:v1", str(tmp_path / "out"), "--plain-http"])
    assert code == 2
    assert "no /data/adapter_config.json, /data/adapter_model.safetensors in the image" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_unknown_tag_is_bad_input(tmp_path, registry, pushed, capsys):
    code = pull_adapter.main([f"{registry.host}/pull/adapter:no-such-tag", str(tmp_path / "out"), "--plain-http"])
    assert code == 2
    assert "not found" in capsys.readouterr().err


def test_a_registry_that_is_down_is_transient(tmp_path, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = pull_adapter.main([f"127.0.0.1:{port}/pull/x@sha256:{'0' * 64}", str(tmp_path / "out"), "--plain-http",
                              "--retries", "0"])
    assert code == 75
    assert "does not answer" in capsys.readouterr().err


def test_the_moving_tag_points_at_the_deployed_digest(tmp_path, registry, adapter_folder):
    repo = f"{registry.host}/pull/moving"
    first = oci.push_adapter(adapter_folder, repo, oci.RegistryAccess(plain_http=True))
    second = oci.push_adapter(write_adapter(tmp_path / "newer", seed=1), repo, oci.RegistryAccess(plain_http=True))
    assert oci.tag(first.ref, "stable", oci.RegistryAccess(plain_http=True)) == f"{repo}:stable@{first.digest}"
    assert oci.resolve(f"{repo}:stable", oci.RegistryAccess(plain_http=True)) == first.digest
    oci.tag(second.ref, "stable", oci.RegistryAccess(plain_http=True))
    assert oci.resolve(f"{repo}:stable", oci.RegistryAccess(plain_http=True)) == second.digest
    assert sorted(oci.tags(repo, oci.RegistryAccess(plain_http=True))) == sorted([first.tag, second.tag, "stable"])


def test_pull_from_the_local_oci_layout(tmp_path, adapter_folder):
    result = oci.write_local_layout(adapter_folder, tmp_path / "oci")
    assert pull_adapter.main([result.ref, str(tmp_path / "out")]) == 0
    assert files_in(tmp_path / "out") == files_in(adapter_folder)
    by_tag = f"{tmp_path / 'oci'}:{result.tag}"
    assert oci.resolve(by_tag) == result.digest


def test_a_blob_that_does_not_match_its_digest_is_refused(tmp_path, adapter_folder):
    result = oci.write_local_layout(adapter_folder, tmp_path / "oci")
    manifest = (tmp_path / "oci" / "blobs" / "sha256" / result.digest[7:]).read_text()
    [layer] = json.loads(manifest)["layers"]
    blob = tmp_path / "oci" / "blobs" / "sha256" / layer["digest"][7:]
    data = blob.read_bytes()
    blob.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # one bit pattern changed, same size
    with pytest.raises(oci.DigestMismatch):
        oci.pull_adapter(result.ref, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_tag_is_pulled_by_the_digest_it_resolved_to_and_the_outputs_name_it(tmp_path, registry, pushed):
    folder, result = pushed
    out = tmp_path / "out"
    code = pull_adapter.main([f"{registry.host}/pull/adapter:{result.tag}", str(tmp_path / "a"), "--plain-http",
                              "--outputs", str(out)])
    assert code == 0
    assert (out / "digest").read_text() == result.digest
    assert (out / "ref").read_text() == f"{registry.host}/pull/adapter@{result.digest}"
    assert json.loads((out / "refs").read_text()) == {"a": f"{registry.host}/pull/adapter@{result.digest}"}


def test_a_volume_folder_is_copied_when_it_holds_a_peft_adapter_and_refused_when_not(tmp_path, adapter_folder):
    out = tmp_path / "out"
    assert pull_adapter.main([str(adapter_folder), str(tmp_path / "copy"), "--outputs", str(out)]) == 0
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == sorted(p.name for p in adapter_folder.iterdir())
    assert (out / "digest").read_text() == "" and json.loads((out / "refs").read_text()) == {}
    (tmp_path / "empty").mkdir()
    assert pull_adapter.main([str(tmp_path / "empty"), str(tmp_path / "none")]) == 2


def test_the_generic_templates_pull_task_pins_every_image_adapter_and_leaves_volumes(tmp_path, registry, pushed):
    _, result = pushed
    adapters = [{"source": {"name": "coder", "image": f"{registry.host}/pull/adapter:{result.tag}"}, "strength": "1"},
                {"source": {"name": "on-volume", "volumeSource": {"persistentVolumeClaim": {"claimName": "x"}}}}]
    out = tmp_path / "out"
    code = pull_adapter.main(["--adapters-json", json.dumps(adapters), "--into", str(tmp_path / "adapters"),
                              "--pull-secret-file", str(tmp_path / "no-such-secret"), "--plain-http",
                              "--outputs", str(out)])
    assert code == 0
    assert json.loads((out / "refs").read_text()) == {"coder": f"{registry.host}/pull/adapter@{result.digest}"}
    assert (tmp_path / "adapters" / "coder" / "adapter_config.json").is_file()
    assert not (tmp_path / "adapters" / "on-volume").exists()
