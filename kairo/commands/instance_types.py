"""`kairo instance-types`: the GPU machine sizes kairo knows, with their GPUs."""

from __future__ import annotations

import argparse

from kairo.commands._common import print_json, table
from kairo.presets import all_instance_types, get_preset
from kairo.problems import InvalidInput, Problem


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("instance-types", help="list GPU instance types and their GPUs")
    parser.add_argument("--cloud", choices=["azure", "aws"], help="only this cloud's types")
    parser.add_argument("--fits", metavar="PRESET", help="only types that hold this preset")
    parser.add_argument("--method", choices=["lora", "qlora"], default="qlora", help="method for --fits")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    types = list(all_instance_types().values())
    if args.cloud:
        types = [t for t in types if t.cloud == args.cloud]
    if args.fits:
        try:
            preset = get_preset(args.fits)
        except KeyError as err:
            raise InvalidInput([Problem("--fits", str(err.args[0]))]) from err
        types = [t for t in types if t.holds(preset, args.method)]
    if args.json:
        print_json([t.model_dump(mode="json") for t in types])
        return 0
    rows = [[t.name, t.cloud, t.gpu.model, str(t.gpu.count), f"{t.gpu.memory_gib:g}",
             f"{t.total_gpu_memory_gib:g}", "yes" if t.gpu.bf16 else "no", t.note or ""] for t in types]
    print(table(rows, ["NAME", "CLOUD", "GPU", "GPUS", "GIB/GPU", "GIB TOTAL", "BF16", "NOTE"]))
    return 0
