"""Benchmarks: `python -m ast_dora.bench <name> [options] [--json OUT]`.

Each benchmark is a module `ast_dora/benchmarks/<name>.py` exposing `add_arguments(parser)` and
`run(args) -> dict`; this dispatcher finds them, gives each a sub-command and writes `run`'s result as JSON
when `--json OUT` is given (the benchmark prints its own table).
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

from . import benchmarks


def available_benchmarks() -> dict[str, object]:
    found = {}
    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{benchmarks.__name__}.{info.name}")
        if hasattr(module, "add_arguments") and hasattr(module, "run"):
            found[info.name] = module
    return found


def build_parser(modules: dict[str, object] | None = None) -> argparse.ArgumentParser:
    """One sub-command per benchmark module (`available_benchmarks()` when `modules` is not given)."""
    modules = available_benchmarks() if modules is None else modules
    parser = argparse.ArgumentParser(prog="python -m ast_dora.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, module in modules.items():
        doc = (module.__doc__ or name).strip().splitlines()[0]
        p = sub.add_parser(
            name, help=doc, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(p)
        p.add_argument(
            "--json", default=None, metavar="OUT", help="Also write the results to this JSON file."
        )
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> dict:
    modules = available_benchmarks()
    args = build_parser(modules).parse_args(argv)
    result = args._run(args)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"results written to {path}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
