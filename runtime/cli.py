"""The ``spikecast`` command line: convert, inspect, run, demo.

Heavy imports (torch, the MQTT client, readers) happen inside the subcommands, so
``spikecast inspect`` and ``spikecast run`` work on an edge device without torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from spikecast.converters.errors import SpikecastError


def _cmd_inspect(args: argparse.Namespace) -> int:
    from spikecast.converters.network import load_network

    net = load_network(args.model)
    print(f"{args.model}")
    print(net.summary())
    if net.calibration is not None:
        from spikecast.runtime.decision import Calibration

        cal = Calibration(net.calibration)
        t_max = net.calibration.n_steps
        print(f"calibration: accuracy at t={t_max}: {cal.accuracy_at(t_max):.4f}")
        for tau in (0.5, 0.8, 0.9, 0.95, 0.99):
            s = cal.stats(tau, 1, t_max)
            print(
                f"  tau={tau:<5} accuracy={s.accuracy:.4f} mean steps={s.mean_steps:6.1f} "
                f"p95 steps={s.p95_steps:6.1f}"
            )
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from spikecast.converters.conversion import convert
    from spikecast.converters.loading import load_array, load_factory, load_state_dict, load_torchscript

    calib = load_array(args.calibration, default_key="x").astype(np.float32)
    if args.torchscript:
        model = load_torchscript(args.torchscript, torch.from_numpy(calib[:2]))
    else:
        if not args.model:
            raise SpikecastError("give --model module:factory (with --weights) or --torchscript FILE")
        model = load_factory(args.model)
        if args.weights:
            model = load_state_dict(model, args.weights)
    holdout = None
    if args.holdout:
        holdout = (load_array(args.holdout, "x").astype(np.float32), load_array(args.holdout, "y"))
    net = convert(
        model,
        calib,
        percentile=args.percentile,
        reset=args.reset,
        input_kind=args.input_kind,
        input_encoding=args.input_encoding,
        input_scale=args.input_scale,
        input_mean=args.input_mean,
        input_std=args.input_std,
        dt_us=args.dt_us,
        class_names=args.classes.split(",") if args.classes else None,
        holdout=holdout,
        calibration_steps=args.calibration_steps,
        max_calibration_samples=args.max_calibration_samples,
        progress=not args.quiet,
    )
    net.save(args.out)
    print(net.summary())
    print(f"wrote {args.out}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from spikecast.runtime.service import run_from_args

    return run_from_args(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from spikecast.runtime.demo import demo

    return demo(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="spikecast", description="Event-driven spiking-network inference runtime"
    )
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="print a network file's layers, shapes, λs, neurons and input spec")
    p.add_argument("model", type=Path)
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("convert", help="convert a trained torch CNN into a spiking network file")
    src = p.add_argument_group("model")
    src.add_argument("--model", help="module:factory or file.py:factory returning an nn.Module")
    src.add_argument("--weights", type=Path, help="state_dict file (loaded with weights_only=True)")
    src.add_argument("--torchscript", type=Path, help="a TorchScript file instead of --model/--weights")
    p.add_argument(
        "--calibration",
        required=True,
        help="network-input calibration data: file.npy or file.npz[:key] (default key x)",
    )
    p.add_argument("--holdout", help="file.npz with x and y: records the early-exit calibration table")
    p.add_argument("--calibration-steps", type=int, default=200)
    p.add_argument("--max-calibration-samples", type=int, default=10_000)
    p.add_argument("--percentile", type=float, default=99.9, help="λ percentile; 100 = max-norm")
    p.add_argument("--reset", choices=["subtract", "zero"], default="subtract")
    p.add_argument("--input-kind", choices=["frame", "events"], default="frame")
    p.add_argument("--input-encoding", choices=["analog", "poisson"], default="analog")
    p.add_argument("--input-scale", type=float, default=1.0, help="raw frame -> input: x*scale")
    p.add_argument("--input-mean", type=float, nargs="+", default=[0.0])
    p.add_argument("--input-std", type=float, nargs="+", default=[1.0])
    p.add_argument("--dt-us", type=int, default=1000, help="sensor time per step for event input")
    p.add_argument("--classes", help="comma-separated class names")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_convert)

    from spikecast.runtime.config import add_run_arguments

    p = sub.add_parser("run", help="run a network on a source and publish decisions (stdout or MQTT)")
    add_run_arguments(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "demo", help="run the bundled MNIST model on bundled saccade streams; no broker needed"
    )
    p.add_argument("--realtime", action="store_true", help="pace the streams by sensor time")
    p.add_argument("--tau", type=float, default=None, help="confidence threshold (default: from the table)")
    p.set_defaults(func=_cmd_demo)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SpikecastError as exc:
        print(f"spikecast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
