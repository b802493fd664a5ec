"""``spikecast nir export|import``: NIR graphs out of and into ``.scn`` files, registered
with the runtime's CLI through the ``spikecast.commands`` entry point (pyproject.toml)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _cmd_export(args: argparse.Namespace) -> int:
    from spikecast.converters.nir_io import export_nir
    from spikecast.ext.core.network import Network

    net = Network.load(args.model)
    export_nir(net, args.out)
    print(f"wrote {args.out} ({len(net.layers)} layers, reset={net.reset}, input={net.input.kind})")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from spikecast.converters.nir_io import NirImportOptions, import_nir

    opts = NirImportOptions(
        input_kind=args.input_kind,
        input_encoding=args.input_encoding,
        dt_us=args.dt_us,
        reset=args.reset,
        class_names=tuple(args.classes.split(",")) if args.classes else None,
    )
    net = import_nir(args.graph, opts)
    net.save(args.out)
    print(net.summary())
    for note in net.meta.get("nir_import", {}).get("notes", []):
        print(f"note: {note}")
    print(f"wrote {args.out}")
    return 0


def register(sub: Any) -> None:
    """Add ``nir`` (with ``export`` and ``import``) to the ``spikecast`` subcommands."""
    p = sub.add_parser("nir", help="export a network file to NIR, or import a NIR graph of IF neurons")
    nsub = p.add_subparsers(dest="nir_command", required=True)
    e = nsub.add_parser("export", help="write a .scn network as a NIR graph (HDF5)")
    e.add_argument("model", type=Path, help="the .scn network file")
    e.add_argument("out", type=Path, help="the .nir file to write")
    e.set_defaults(func=_cmd_export)
    i = nsub.add_parser(
        "import",
        help="turn a NIR graph of IF neurons (spikecast, sinabs, snnTorch) into a .scn network file",
        description="Options left out come from the graph's spikecast metadata when it has some, "
        "else the defaults: frame input, analog encoding, dt 1000 us, reset by subtraction.",
    )
    i.add_argument("graph", type=Path, help="the .nir file")
    i.add_argument("--out", type=Path, required=True)
    i.add_argument("--input-kind", choices=["frame", "events"], default=None)
    i.add_argument("--input-encoding", choices=["analog", "poisson"], default=None)
    i.add_argument("--dt-us", type=int, default=None, help="sensor time per step for event input")
    i.add_argument("--reset", choices=["subtract", "zero"], default=None)
    i.add_argument("--classes", help="comma-separated class names")
    i.set_defaults(func=_cmd_import)
