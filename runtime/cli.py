"""The ``spikecast`` command line: inspect, run, demo, and ``convert`` from the converter.

Heavy imports (torch, the MQTT client, readers) happen inside the subcommands, so
``spikecast inspect`` and ``spikecast run`` work on an edge device without torch.
``spikecast convert`` lives in :mod:`spikecast.converters.cli` and joins through the
``spikecast.commands`` entry point: the runtime never imports the converter.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from spikecast.ext.core.errors import SpikecastError


def _cmd_inspect(args: argparse.Namespace) -> int:
    from spikecast.ext.core.network import load_network

    net = load_network(args.model)
    print(f"{args.model}")
    summary = net.summary()
    print(summary)
    from spikecast.runtime.decision import Calibration, initial_point, point_line

    cal = Calibration(net.calibration) if net.calibration is not None else None
    choice = initial_point(net, cal)
    print(f"default {point_line(choice, net.exit_signal, cal)}")  # what `spikecast run` logs
    if choice.warning is not None and choice.warning not in summary:  # the summary's said it
        print(f"  note: {choice.warning}")
    if cal is not None:
        t_max = cal.table.n_steps
        print("other points (t_min=1):")
        for tau in (0.5, 0.8, 0.9, 0.95, 0.99):
            s = cal.stats(tau, 1, t_max)
            print(
                f"  tau={tau:<5} accuracy={s.accuracy:.4f} mean steps={s.mean_steps:6.1f} "
                f"p95 steps={s.p95_steps:6.1f}"
            )
    return 0


RUN_EPILOG = """\
At exit, one line on stderr sums up the run: decisions, inputs, what was
dropped, by cause, and what was not used (events outside the network input after
--crop/--downsample); the metrics topic carries the same counters in MQTT mode.
File sources are read as fast as the engine takes them and never shed; live
sources (--source mqtt, udp://HOST:PORT, dv://HOST:PORT) shed whole packets when the
queue is full.

exit status:
  0    every accepted input was used and every decision delivered (events outside
       the network input after --crop/--downsample are counted, not a loss)
  2    error: bad arguments or config, unreadable model, a single unreadable
       file, a single file of a sensor size that does not fit the network input
  3    something was lost: events or packets shed, bad packets, late events,
       UDP datagrams the kernel dropped (receive buffer full),
       unreadable files among several, files of a sensor that does not fit
       the input among several (without --fit), files whose events fall
       mostly outside the input, decisions never delivered to the broker
  130  interrupted before the service started (SIGINT or SIGTERM during a run
       stops it cleanly, with 0 or 3)
"""


def _cmd_run(args: argparse.Namespace) -> int:
    from spikecast.runtime.service import run_from_args

    return run_from_args(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from spikecast.runtime.demo import demo

    return demo(args)


#: Entry-point group through which other parts of spikecast (the converter) add
#: subcommands: each entry is a function ``register(subparsers) -> None``.
COMMANDS_GROUP = "spikecast.commands"


def version() -> str:
    try:
        return metadata.version("spikecast")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "unknown"


def _add_plugin_commands(sub: Any) -> None:
    for ep in sorted(metadata.entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        ep.load()(sub)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="spikecast", description="Event-driven spiking-network inference runtime"
    )
    ap.add_argument("--version", action="version", version=f"spikecast {version()}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="print a network file's layers, shapes, λs, neurons and input spec")
    p.add_argument("model", type=Path)
    p.set_defaults(func=_cmd_inspect)

    from spikecast.runtime.config import add_run_arguments

    p = sub.add_parser(
        "run",
        help="run a network on a source and publish decisions (stdout or MQTT)",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "demo", help="run the bundled MNIST model on bundled saccade streams; no broker needed"
    )
    p.add_argument("--realtime", action="store_true", help="pace the streams by sensor time")
    p.add_argument("--tau", type=float, default=None, help="confidence threshold (default: from the table)")
    p.set_defaults(func=_cmd_demo)
    _add_plugin_commands(sub)
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
