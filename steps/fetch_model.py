"""`kairo-step fetch-model`: fill `model/<preset>/` with the preset's weights, tokenizer and config.

Sources: the preset's Hugging Face repo at its pinned revision (token from `--token-file`), an OCI reference
(`--image` — Kaito's `presetOptions.image` — or a preset's `oci` source): an ORAS artifact of model files, or a
Kaito model image, whose weights lie under /workspace/tfs/weights (its layers read, never run: kairo.oci.layers);
a folder on a mounted volume (`--path`, or a preset's `local` source), or `builtin` (tiny-llama-test, built
here from its seed). Only safetensors weights, config,
tokenizer and chat-template files are taken — never pickles (`*.bin`, `*.pt`…), which can run code when
loaded; a source with nothing else is refused. The folder is filled in a temp folder and renamed into
place, a marker (`.kairo-fetch.json`) written last: a run that finds the marker for the same source and
revision skips (`--force` fetches again). Progress is reported in bytes.

Outputs: model-dir, revision. Exit codes: 2 for what the user must fix (no safetensors, unknown repo or
revision, a gated repo without a token), 75 for network or registry trouble.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import sys
import threading
from pathlib import Path

from kairo import exitcodes, stepkit
from kairo.machine import GIB
from kairo.stepkit import StepFailed

MARKER = ".kairo-fetch.json"
# What a model folder needs besides its weights; tokenizer.model is a sentencepiece protobuf, not a pickle.
SUPPORT_FILES = (
    "config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt",
    "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json", "*.tiktoken",
)
PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle", "*.h5", "*.msgpack")
TOKEN_FILES = ("token", "HF_TOKEN", "hf_token")


class Refused(StepFailed):
    """The source cannot give kairo a model it will load; the message says why and what to do (exit 2)."""


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kairo-step fetch-model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True, help="model preset (kairo presets)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--image", help="an ORAS artifact of model files, or a Kaito model image (weights under "
                                        "/workspace/tfs/weights), instead of the preset's source")
    source.add_argument("--path", help="a mounted folder holding the weights, instead of the preset's source")
    parser.add_argument("--pull-secret-file", help="dockerconfigjson for --image (a mounted imagePullSecret; "
                                                   "not there: pulled without credentials)")
    parser.add_argument("--token-file", help="Hugging Face token: a file, or a folder holding token/HF_TOKEN/hf_token")
    parser.add_argument("--force", action="store_true", help="fetch again even when the cache holds this revision")
    stepkit.add_common_flags(parser, workdir=True, outputs=True,
                             cluster_config="cluster config (which registries speak plain http)",
                             local="a local run: loopback registries speak plain http")
    return parser


log = stepkit.logger("fetch-model")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return stepkit.run_step("fetch-model", fetch, args)
    except OSError as err:  # the work volume itself (full, read-only): say so, and let a retry try again
        log(f"cannot write the model cache: {err}")
        return exitcodes.TRANSIENT


def fetch(args: argparse.Namespace) -> int:
    from kairo.atomic import staged_dir, write_output, write_text

    preset = stepkit.preset(args.preset)
    workdir = stepkit.workdir(args)
    outputs = stepkit.outputs(args)
    target = workdir / "model" / preset.name
    source = preset.source
    kind = "oci" if (args.image or "").strip() or source.oci else "path" if args.path or source.local else (
        "builtin" if source.builtin else "huggingface")
    ref = (args.image or "").strip() or (source.oci.ref if source.oci else "")
    folder = Path(args.path or (source.local.path if source.local else "."))
    where = {"oci": f"oci:{_repository(ref)}", "path": f"path:{folder}"}.get(kind, source.describe())

    if kind == "oci":
        args.pull_secret_file = stepkit.mounted_secret(args.pull_secret_file, ref, log)
    revision = _known_revision(kind, preset, ref, folder, args)
    marker = target / MARKER
    if revision and marker.is_file() and not args.force:
        done = json.loads(marker.read_text())
        if done.get("source") == where and done.get("revision") == revision:
            log(f"{target} already holds {where} at {revision}: skipping")
            write_output("model-dir", target, outputs)
            write_output("revision", revision, outputs)
            return exitcodes.OK

    log(f"fetching {preset.name} from {where} into {target}")
    with staged_dir(target) as tmp:
        if kind == "builtin":
            from kairo.training.tinyfiles import build_tiny_model

            build_tiny_model(tmp, seed=source.builtin.seed)
        elif kind == "path":
            _copy_folder(folder, tmp, preset.trust_remote_code)
        elif kind == "oci":
            _pull_oci(f"{_repository(ref)}@{revision}", tmp, args, _size_limit(preset))
        else:
            code = _download_hub(source.huggingface.repo, revision, tmp, args, preset.trust_remote_code)
            if code:
                return code
        files = _check_model_folder(tmp, where)
        for path in tmp.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)  # safetensors writes 0600; pods may read as another uid
        size = sum(p.stat().st_size for p in files)
        write_text(tmp / MARKER, json.dumps({"preset": preset.name, "source": where, "revision": revision,
                                             "files": sorted(p.name for p in files), "bytes": size}, indent=2))
    log(f"{preset.name}: {len(files)} files, {size / 2**20:.1f} MiB at revision {revision}")
    write_output("model-dir", target, outputs)
    write_output("revision", revision, outputs)
    return exitcodes.OK


def _known_revision(kind: str, preset, ref: str, folder: Path, args) -> str:
    """The revision to fetch when it is known without fetching: a hub commit, a seed, a digest, a listing."""
    if kind in ("huggingface", "builtin"):
        return preset.revision
    if kind == "oci":
        return _resolve_oci(ref, args)
    if not folder.is_dir():
        raise Refused(f"{folder} is not a folder — the model's volume must be mounted there")
    listing = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in _wanted_files(folder, trust_code=True))
    return "files:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


def wanted(names: list[str], trust_code: bool) -> list[str]:
    """The file names kairo takes from a model folder: safetensors weights and the small files beside them."""
    patterns = SUPPORT_FILES + (("*.py",) if trust_code else ())
    weights = [n for n in names if n.endswith(".safetensors")]
    # Mistral repos also carry their own-format `consolidated.safetensors`: the same weights a second time.
    if any(not n.startswith("consolidated") for n in weights):
        weights = [n for n in weights if not n.startswith("consolidated")]
    return sorted(set(weights) | {n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)})


def _wanted_files(folder: Path, trust_code: bool) -> list[Path]:
    names = [p.name for p in folder.iterdir() if p.is_file()]
    return [folder / n for n in wanted(names, trust_code)]


def _no_safetensors(where: str, names: list[str]) -> Refused:
    pickles = sorted(n for n in names if any(fnmatch.fnmatch(n, p) for p in PICKLES))
    found = f"it has only {', '.join(pickles[:4])}" if pickles else "it has none"
    return Refused(f"{where} has no safetensors weights ({found}) — kairo never loads pickled weights, which can run "
                   "code; convert them to safetensors (transformers: save_pretrained(safe_serialization=True))")


def _check_model_folder(folder: Path, where: str) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.name != MARKER]
    names = [p.name for p in files]
    if not any(n.endswith(".safetensors") for n in names):
        raise _no_safetensors(where, names)
    if "config.json" not in names:
        raise Refused(f"{where} has no config.json — a transformers model folder needs one")
    return files


def _copy_folder(folder: Path, tmp: Path, trust_code: bool) -> None:
    chosen = _wanted_files(folder, trust_code)
    if not any(p.name.endswith(".safetensors") for p in chosen):
        raise _no_safetensors(str(folder), [p.name for p in folder.iterdir()])
    total = sum(p.stat().st_size for p in chosen)
    with _byte_progress(tmp, total):
        for path in chosen:
            shutil.copyfile(path, tmp / path.name)


def _repository(ref: str) -> str:
    """`registry/repo` of an OCI reference, without its tag or digest."""
    name = ref.split("@", 1)[0]
    return name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name


def _registry_call(ref: str, action, args):
    """Run `action(oci, access)`; a registry failure becomes a refusal carrying the registry's exit code."""
    from kairo.clients import oci
    from kairo.cluster import load_cluster_config

    access = oci.registry_access(ref, load_cluster_config(args.cluster_config), auth_file=args.pull_secret_file,
                                 local=stepkit.is_local(args))
    try:
        return action(oci, access)
    except oci.RegistryError as err:
        raise StepFailed(str(err), err.exit_code) from None


def _resolve_oci(ref: str, args) -> str:
    """The digest `ref` names now (a tag moves; the digest is the revision)."""
    if "@" in ref:
        return ref.split("@", 1)[1]
    return _registry_call(ref, lambda oci, access: oci.resolve(ref, access), args)


def _size_limit(preset) -> int:
    """The most bytes an OCI pull may bring: the weights in fp32 with room to spare, plus an image's runtime layers."""
    return int(preset.parameters_billion * 4 * 1.25 * GIB) + 20 * GIB


def _pull_oci(ref: str, tmp: Path, args, max_bytes: int) -> None:
    """Pull the artifact or image by digest, taking only the files kairo loads (pickles are never fetched)."""
    scratch = tmp / ".pull"
    left_out: set[str] = set()

    def keep(name: str) -> bool:  # top-level files only, as from a hub repo
        if "/" not in name and wanted([name], trust_code=False):
            return True
        left_out.add(name)
        return False

    _registry_call(ref, lambda oci, access: oci.pull_model(ref, scratch, access, keep=keep, max_bytes=max_bytes),
                   args)
    names = [p.name for p in scratch.iterdir() if p.is_file()]
    chosen = wanted(names, trust_code=False)
    for name in chosen:
        os.replace(scratch / name, tmp / name)
    dropped = sorted(left_out | (set(names) - set(chosen)))
    if dropped:
        log(f"left out of {ref}: {', '.join(dropped[:8])}{' …' if len(dropped) > 8 else ''}")
    shutil.rmtree(scratch)
    if not any(n.endswith(".safetensors") for n in names):
        raise _no_safetensors(ref, sorted(set(names) | left_out))


def _download_hub(repo: str, revision: str, tmp: Path, args, trust_code: bool) -> int:
    """Download the wanted files of `repo` at `revision` from the Hugging Face Hub (or $HF_ENDPOINT)."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    token = _read_token(args.token_file)
    try:
        files = [f for f in HfApi(token=token).list_repo_tree(repo, revision=revision) if hasattr(f, "size")]
        names = [f.path for f in files]
        chosen = wanted(names, trust_code)
        if not any(n.endswith(".safetensors") for n in chosen):
            raise _no_safetensors(f"{repo}@{revision[:12]}", names)
        total = sum(f.size for f in files if f.path in chosen)
        with _byte_progress(tmp, total):
            snapshot_download(repo, revision=revision, local_dir=tmp, allow_patterns=chosen, token=token,
                              max_workers=4)
    except GatedRepoError:
        log(f"{repo} is gated: its license must be accepted on the Hub and a token with access given — set "
            "tuning.preset.presetOptions.modelAccessSecret to a Secret holding the token")
        return exitcodes.BAD_INPUT
    except RevisionNotFoundError:
        log(f"{repo} has no revision {revision} — the preset pins a commit that the repo no longer has")
        return exitcodes.BAD_INPUT
    except RepositoryNotFoundError:
        hint = "" if token else " (or it is private: set tuning.preset.presetOptions.modelAccessSecret)"
        log(f"no repo {repo} on the Hub{hint}")
        return exitcodes.BAD_INPUT
    except OfflineModeIsEnabled:
        log("HF_HUB_OFFLINE is set: the Hub cannot be reached from this step")
        return exitcodes.BAD_INPUT
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else 0
        log(f"the Hub answered {status} for {repo}: {str(err).splitlines()[0]}")
        return exitcodes.BAD_INPUT if status in (401, 403) else exitcodes.TRANSIENT
    except (ConnectionError, TimeoutError) as err:
        log(f"cannot reach the Hub for {repo}: {err}")
        return exitcodes.TRANSIENT
    except Exception as err:  # httpx's transport errors are not OSErrors
        if type(err).__module__.startswith(("httpx", "httpcore")):
            log(f"cannot reach the Hub for {repo}: {type(err).__name__}: {err}")
            return exitcodes.TRANSIENT
        raise
    shutil.rmtree(tmp / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
    return exitcodes.OK


def _read_token(path: str | None) -> str | None:
    """The token in a mounted secret: a file, or a folder with one of TOKEN_FILES. Never logged."""
    if not path:
        return None
    candidate = Path(path)
    if candidate.is_dir():
        candidate = next((candidate / n for n in TOKEN_FILES if (candidate / n).is_file()), candidate / TOKEN_FILES[0])
    try:
        return candidate.read_text().strip() or None
    except OSError:
        raise Refused(f"--token-file {path}: no readable token there (a file, or a folder with "
                      f"{', '.join(TOKEN_FILES)})") from None


class _byte_progress:
    """Report the bytes landed under `folder` every two seconds while the block runs."""

    def __init__(self, folder: Path, total: int):
        from kairo.progress import Progress

        self.folder, self.progress = folder, Progress(max(total, 1), "fetch-model", every=0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _landed(self) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file() and p.name != MARKER)

    def _watch(self) -> None:
        while not self.stop.wait(2.0):
            done = self._landed()
            self.progress.update(done, f"{done / 2**20:.1f} of {self.progress.total / 2**20:.1f} MiB")

    def __enter__(self):
        self.progress.update(0, f"0 of {self.progress.total / 2**20:.1f} MiB", force=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        if exc[0] is None:
            self.progress.finish(f"{self.progress.total / 2**20:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())
