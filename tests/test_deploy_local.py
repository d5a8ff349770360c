"""`deploy --local`: the inference server started on this machine in the background, and stopped again."""

from __future__ import annotations

from pathlib import Path

from kairo.steps import deploy, deployed

from kairo import exitcodes, local_server


def run_local(workdir: Path, *extra: str) -> int:
    return deploy.main(["--local", "--workspace", "phi3", "--preset", "tiny-llama-test",
                        "--adapter-ref", "127.0.0.1:5000/phi3@sha256:" + "1" * 64, "--eval-loss", "1.2",
                        "--workdir", str(workdir), "--outputs", str(workdir / "out"), *extra])


def test_local_deploy_needs_the_trained_adapter(tmp_path, capsys):
    assert run_local(tmp_path) == exitcodes.BAD_INPUT
    assert f"no adapter at {tmp_path.resolve() / 'adapter'}" in capsys.readouterr().err


def test_a_server_that_cannot_start_fails_the_deploy_with_the_end_of_its_log(tmp_path, capsys):
    (tmp_path / "adapter").mkdir()  # empty: no adapter a server could load
    assert run_local(tmp_path, "--timeout", "120") == exitcodes.FAILED
    assert "the end of its log" in capsys.readouterr().err
    assert not local_server.pid_path(tmp_path).exists()
    assert local_server.read_deployed(tmp_path) is None
    assert not (tmp_path / "out" / "service-url").exists()


def test_deployed_reads_the_local_record(tmp_path):
    local_server.write_deployed(tmp_path, {"current": {"ref": "oci-layout:phi3@sha256:" + "2" * 64,
                                                       "dataset_digest": "sha256:" + "d" * 64, "eval_loss": "0.9"}})
    out = tmp_path / "out"
    assert deployed.main(["--local", "--workspace", "phi3", "--workdir", str(tmp_path), "--outputs", str(out)]) == 0
    assert (out / "eval-loss").read_text() == "0.9"
    assert (out / "adapter-ref").read_text() == "oci-layout:phi3@sha256:" + "2" * 64
