"""`kairo presets [show NAME]`: the models kairo can tune, and what each needs."""

from __future__ import annotations

import argparse

from kairo.commands._common import print_json, table
from kairo.presets import all_presets, fitting_instance_types, get_preset
from kairo.problems import InvalidInput, Problem


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("presets", help="list model presets, or show one")
    parser.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    parser.add_argument("name", nargs="?", help="preset name (with show)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        if not args.name:
            raise InvalidInput([Problem("NAME", "`kairo presets show` needs a preset name")])
        try:
            preset = get_preset(args.name)
        except KeyError as err:
            raise InvalidInput([Problem("NAME", str(err.args[0]))]) from err
        data = preset.model_dump(mode="json")
        if preset.tuning:
            data["fits_on"] = {m: [t.name for t in fitting_instance_types(preset, m)] for m in preset.tuning.methods}
        if args.json:
            print_json(data)
        else:
            _show(data)
        return 0
    presets = all_presets()
    if args.json:
        print_json([p.model_dump(mode="json") for p in presets.values()])
        return 0
    rows = []
    for p in presets.values():
        mem = p.tuning.gpu_memory_gib if p.tuning else {}
        rows.append([p.name, f"{p.parameters_billion:g}B", p.source.describe(),
                     _gib(mem.get("lora")), _gib(mem.get("qlora")), "yes" if p.kaito_preset else ""])
    print(table(rows, ["NAME", "PARAMS", "SOURCE", "LORA GIB", "QLORA GIB", "KAITO"]))
    return 0


def _show(data: dict, indent: str = "") -> None:
    for key, value in data.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            _show(value, indent + "  ")
        elif isinstance(value, list):
            print(f"{indent}{key}: {', '.join(str(v) for v in value)}")
        else:
            print(f"{indent}{key}: {value}")


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
