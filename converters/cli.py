"""``spikecast convert``: the converter's subcommand, registered with the runtime's CLI
through the ``spikecast.commands`` entry point (pyproject.toml)."""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path
from typing import Any

from spikecast.ext.core.errors import SpikecastError
from spikecast.ext.core.network import MAX_POOL_MODES, READOUT_MODES


def _scale(text: str) -> float:
    """A number or a fraction ("1/255"): the exact float a Python 1/255 gives, so the
    file matches one converted with convert(input_scale=1 / 255)."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError) as exc:
        raise argparse.ArgumentTypeError(f"not a number or a fraction like 1/255: {text!r}") from exc


def _cmd_convert(args: argparse.Namespace) -> int:
    import numpy as np

    try:
        import torch
    except ImportError as exc:
        raise SpikecastError(
            "spikecast convert needs torch: pip install 'spikecast[convert]'"
        ) from exc
    from spikecast.converters.conversion import convert
    from spikecast.converters.loading import load_array, load_factory, load_state_dict, load_torchscript

    calib = load_array(args.calibration, default_key="x").astype(np.float32)
    if args.onnx:
        from spikecast.converters.onnx_io import load_onnx

        model = load_onnx(args.onnx)
    elif args.torchscript:
        model = load_torchscript(args.torchscript, torch.from_numpy(calib[:2]))
    else:
        if not args.model:
            raise SpikecastError(
                "give --model module:factory (with --weights), --torchscript FILE or --onnx FILE"
            )
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
        v_init=args.v_init,
        evidence_steps=args.evidence_steps,
        max_spikes=args.max_spikes,
        max_pool=args.max_pool,
        readout=args.readout,
        bias_steps=args.bias_steps,
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
        n_threads=args.threads,
    )
    net.save(args.out)
    print(net.summary())
    print(f"wrote {args.out}")
    return 0


def register(sub: Any) -> None:
    """Add ``convert`` to the ``spikecast`` subcommands."""
    p = sub.add_parser("convert", help="convert a trained torch CNN into a spiking network file")
    src = p.add_argument_group("model")
    src.add_argument("--model", help="module:factory or file.py:factory returning an nn.Module")
    src.add_argument("--weights", type=Path, help="state_dict file (loaded with weights_only=True)")
    src.add_argument("--torchscript", type=Path, help="a TorchScript file instead of --model/--weights")
    src.add_argument("--onnx", type=Path, help="an ONNX file instead of --model/--weights (via onnx2torch)")
    p.add_argument(
        "--calibration",
        required=True,
        help="network-input calibration data: file.npy or file.npz[:key] (default key x)",
    )
    p.add_argument("--holdout", help="file.npz with x and y: records the early-exit calibration table")
    p.add_argument("--calibration-steps", type=int, default=200)
    p.add_argument("--max-calibration-samples", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=None,
                   help="engines that record the holdout tables (default: every CPU this process may use)")
    p.add_argument(
        "--percentile", type=float, default=None,
        help="λ percentile; 100 = max-norm (default: 99.9, or with --holdout the one of "
        "99/99.5/99.9/100 that decides earliest at no cost to the plateau)",
    )  # fmt: skip
    p.add_argument(
        "--v-init", type=float, default=None,
        help="initial membrane / threshold in [0, 1); default 0.5 for frames, 0 for events",
    )
    p.add_argument(
        "--evidence-steps", type=float, default=None,
        help="early-exit signal: 0 = confidence in the output rate, t_e > 0 = in the evidence "
        "accumulated (scaled by t/t_e); default: rate, or with --holdout whichever decides earliest",
    )  # fmt: skip
    p.add_argument(
        "--max-spikes", type=int, default=None,
        help="burst coding: up to B spikes per neuron and step, hidden λ divided by B (decides "
        "sooner for up to B times the spikes); default 1, or for frames with --holdout 1 or 4, "
        "whichever does the least work per decision",
    )  # fmt: skip
    p.add_argument(
        "--max-pool", choices=MAX_POOL_MODES, default="count",
        help="max-pool spikes: count (a window's spike count is the max of its inputs', the "
        "default) or gated (passes the spikes of the input with the most so far)",
    )  # fmt: skip
    p.add_argument(
        "--readout", choices=READOUT_MODES, default=None,
        help="what the logits read: spikes (the last hidden layer's spike counts) or membrane "
        "(its counts plus residual membrane, N + V/theta); default: spikes without --holdout; "
        "with it, both are weighed on the holdout table where the network allows the membrane one",
    )  # fmt: skip
    p.add_argument(
        "--bias-steps", type=int, default=None,
        help="calibrate every spiking layer's bias so that its rate after T steps matches its "
        "ANN activation on the calibration frames; 0 = off; default: 64 for frames with "
        "--holdout, else off",
    )  # fmt: skip
    p.add_argument("--reset", choices=["subtract", "zero"], default="subtract")
    p.add_argument("--input-kind", choices=["frame", "events"], default="frame")
    p.add_argument("--input-encoding", choices=["analog", "poisson"], default="analog")
    p.add_argument("--input-scale", type=_scale, default=1.0,
                   help="raw frame -> input: x*scale; a number or a fraction (1/255)")
    p.add_argument("--input-mean", type=float, nargs="+", default=[0.0])
    p.add_argument("--input-std", type=float, nargs="+", default=[1.0])
    p.add_argument("--dt-us", type=int, default=1000, help="sensor time per step for event input")
    p.add_argument("--classes", help="comma-separated class names")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_convert)
