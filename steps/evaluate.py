"""`kairo-step evaluate`: is the new adapter better than the one deployed? Decide whether to ship it.

Both adapters are measured on the same held-out conversations (`data/eval.jsonl`; without an eval split,
a fixed sample of the training rows — and the log says so): loss per assistant token and its perplexity,
each adapter with its own chat template, over one base model loaded once (4-bit for qlora). The eval
split's tokens are those the train step made and measured its eval loss on (`cache/tokenized/`, reused
when the tokenizer, template and max_length are the same, which they are for the new adapter). The deployed
adapter comes from the registry by digest (`--deployed REF`, as `deployed` reports it) or from a folder
(`--deployed-dir`). `decision` is `deploy` when nothing is deployed, when the deployed adapter belongs to
another base model, or when the new loss is lower by more than `--margin`; otherwise `keep`, and the
workflow skips push and deploy.

Outputs: decision, new-loss, old-loss (empty when nothing is deployed), message; artifact eval.json.
Exit codes: 2 for bad input (no adapter, no data, a bad reference), 75 for registry trouble.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

from kairo import exitcodes, stepkit
from kairo.stepkit import StepFailed

SAMPLE_ROWS = 200  # held-out stand-in when there is no eval split


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kairo-step evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True, help="model preset the adapters belong to")
    parser.add_argument("--method", required=True, choices=("lora", "qlora"), help="how the base model is loaded")
    deployed = parser.add_mutually_exclusive_group()
    deployed.add_argument("--deployed", default="", help="the deployed adapter's reference (empty: none deployed)")
    deployed.add_argument("--deployed-dir", help="the deployed adapter as a folder (a local copy)")
    parser.add_argument("--pull-secret-file", help="dockerconfigjson for --deployed (a mounted imagePullSecret)")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="the new eval loss must be lower by more than this to deploy (default 0)")
    parser.add_argument("--config", help="training_config.yaml (its quantization and chat template)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    stepkit.add_common_flags(parser, workdir=True, outputs=True,
                             cluster_config="cluster config (which registries speak plain http)",
                             local="a local run: loopback registries speak plain http")
    return parser


log = stepkit.logger("evaluate")


def main(argv: list[str] | None = None) -> int:
    return stepkit.run_step("evaluate", evaluate, make_parser().parse_args(argv))


def evaluate(args: argparse.Namespace) -> int:
    from kairo.atomic import write_output, write_text
    from kairo.problems import InvalidInput, Problem
    from kairo.training.config import resolve_training_config

    workdir = stepkit.workdir(args)
    outputs = stepkit.outputs(args)
    preset = stepkit.preset(args.preset)
    config = resolve_training_config(args.method, None, args.config)
    new_dir = workdir / "adapter"
    if not (new_dir / "adapter_config.json").is_file():
        raise InvalidInput([Problem("adapter", f"{new_dir} holds no adapter — the train step writes it")])

    # ── the held-out conversations both adapters answer ──
    conversations, split = _held_out(workdir)
    if conversations is not None:
        log(f"{len(conversations)} conversations from {split}")

    # ── the deployed adapter, if there is one ──
    deployed_dir: Path | None = Path(args.deployed_dir) if args.deployed_dir else None
    deployed_ref = args.deployed.strip()
    if deployed_ref:
        deployed_dir = _pull(deployed_ref, workdir / "state" / "deployed-adapter", args)
    if deployed_dir is not None and not (deployed_dir / "adapter_config.json").is_file():
        raise InvalidInput([Problem("--deployed-dir", f"{deployed_dir} holds no adapter (no adapter_config.json)")])
    other_base = _other_base(deployed_dir, preset.name) if deployed_dir else None

    # ── one base model, both adapters ──
    model = _base_with_adapter(new_dir, workdir / "model" / preset.name, preset, args, config)
    results = {"new": _measure("new", new_dir, model, workdir, preset, config, conversations)}
    if deployed_dir is not None and other_base is None:
        model.load_adapter(str(deployed_dir), adapter_name="deployed")
        model.set_adapter("deployed")
        results["deployed"] = _measure("deployed", deployed_dir, model, workdir, preset, config, conversations)
    new_loss = results["new"]["loss"]
    old_loss = results["deployed"]["loss"] if "deployed" in results else None

    # ── decide ──
    if deployed_dir is None:
        decision, message = "deploy", f"nothing deployed yet: deploying (eval loss {new_loss:.4f})"
    elif other_base:
        decision, message = "deploy", f"the deployed adapter is for {other_base}, not {preset.name}: deploying"
    elif new_loss < old_loss - args.margin:
        decision, message = "deploy", f"deploying the new adapter (eval loss {new_loss:.4f} vs {old_loss:.4f})"
    else:
        decision, message = "keep", f"kept the current adapter (eval loss {new_loss:.4f} vs {old_loss:.4f})"
    log(message)

    report = {
        "decision": decision, "message": message, "margin": args.margin, "split": split,
        "conversations": results["new"]["conversations"], "preset": preset.name,
        "new": results["new"], "deployed": results.get("deployed"),
        "deployed_ref": deployed_ref or (str(deployed_dir) if deployed_dir else None),
    }
    write_text(outputs / "eval.json", json.dumps(report, indent=2) + "\n")
    write_output("decision", decision, outputs)
    write_output("new-loss", f"{new_loss:.6g}", outputs)
    write_output("old-loss", "" if old_loss is None else f"{old_loss:.6g}", outputs)
    write_output("message", message, outputs)
    return exitcodes.OK


def _held_out(workdir: Path) -> tuple[list | None, str]:
    """None and data/eval.jsonl (read through the token cache), or a fixed sample of data/train.jsonl without one."""
    from kairo.problems import InvalidInput, Problem
    from kairo.training.chat import read_conversations

    eval_path, train_path = workdir / "data" / "eval.jsonl", workdir / "data" / "train.jsonl"
    if eval_path.is_file() and any(line.strip() for line in _lines(eval_path)):
        return None, "data/eval.jsonl"
    if not train_path.is_file():
        raise InvalidInput([Problem("data/train.jsonl", f"{train_path} not found — the download step writes it")])
    rows = read_conversations(train_path)
    if not rows:
        raise InvalidInput([Problem("data/train.jsonl", "no conversations to evaluate on")])
    sample = sorted(random.Random(0).sample(range(len(rows)), min(SAMPLE_ROWS, len(rows))))
    log("no eval split (DatasetConfig.train_test_split is 1): measuring on a fixed sample of the training rows, "
        "which both adapters may have seen — set train_test_split below 1 for a fair comparison")
    return [rows[i] for i in sample], f"a sample of data/train.jsonl ({len(sample)} rows; no eval split)"


def _lines(path: Path):
    with open(path, "rb") as handle:
        yield from handle


def _pull(ref: str, dest: Path, args) -> Path:
    """The deployed adapter pulled into `dest`; StepFailed with the registry's exit code when it cannot be."""
    from kairo.clients import oci
    from kairo.cluster import load_cluster_config

    access = oci.registry_access(ref, load_cluster_config(args.cluster_config), auth_file=args.pull_secret_file,
                                 local=stepkit.is_local(args))
    try:
        oci.pull_adapter(ref, dest, access)
    except oci.RegistryError as err:
        raise StepFailed(f"cannot pull the deployed adapter {ref}: {err}", err.exit_code) from None
    log(f"deployed adapter {ref} pulled")
    return dest


def _other_base(deployed_dir: Path, preset: str) -> str | None:
    """The deployed adapter's preset when it is not `preset` (its loss says nothing about this one)."""
    try:
        record = json.loads((deployed_dir / "kairo.json").read_text())
    except (OSError, ValueError):
        return None
    other = record.get("preset")
    return other if other and other != preset else None


def _measure(name: str, adapter_dir: Path, model, workdir: Path, preset, config, conversations) -> dict:
    """Held-out loss of the active adapter of `model`, on the conversations in its own chat template.

    `conversations` None means data/eval.jsonl, whose packed tokens come from the cache the train step filled.
    """
    from transformers import AutoTokenizer

    from kairo.training.chat import resolve_chat_template, tokenize_dataset
    from kairo.training.packing import PackedDataset, held_out_loss
    from kairo.training.tokencache import packed_split

    has_tokenizer = (adapter_dir / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir if has_tokenizer else workdir / "model" / preset.name,
                                              local_files_only=True)
    resolve_chat_template(tokenizer, preset, None)
    max_length = config.TokenizerParams.max_length or min(2048, preset.context_length)
    if conversations is None:
        data = packed_split(workdir / "data" / "eval.jsonl", tokenizer, max_length, workdir / "cache" / "tokenized",
                            log)
        count = data.meta["rows_read"]
    else:
        data = PackedDataset(tokenize_dataset(tokenizer, conversations, max_length).examples, max_length)
        count = len(conversations)
    loss, tokens = held_out_loss(model, data)
    perplexity = math.exp(loss) if loss < 50 else None
    log(f"{name} adapter: eval loss {loss:.4f}, perplexity {perplexity or float('inf'):.2f} over {tokens} tokens")
    return {"loss": loss, "perplexity": perplexity, "tokens": tokens, "adapter": str(adapter_dir),
            "conversations": count}


def _base_with_adapter(adapter_dir: Path, model_dir: Path, preset, args, config):
    """The preset's base model (4-bit for qlora, as trained) with the new adapter on it."""
    from peft import PeftModel

    from kairo.problems import InvalidInput, Problem
    from kairo.training import base_model
    from kairo.training.devices import capability, choose_precision

    if not (model_dir / "config.json").is_file():
        raise InvalidInput([Problem("model", f"{model_dir} holds no model — the fetch-model step fills it")])
    cap, gpu = capability(args.device)
    preferred = (config.QuantizationConfig.bnb_4bit_compute_dtype if args.method == "qlora"
                 else config.ModelConfig.torch_dtype)
    precision = choose_precision(cap, preferred=preferred, gpu=gpu)
    device_map = {"": "cpu"} if cap is None else config.ModelConfig.device_map
    base = base_model.load_base_model(model_dir, preset, config, precision, device_map)
    model = PeftModel.from_pretrained(base, str(adapter_dir), adapter_name="new")
    model.eval()
    return model


if __name__ == "__main__":
    sys.exit(main())
