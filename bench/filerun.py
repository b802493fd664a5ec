"""`spikecast run` over a folder of recordings against the engine alone, in one run.

    python bench/filerun.py                      # 1,000 real N-MNIST recordings, 5 repeats
    python bench/filerun.py --files 100 --repeats 2

Both sides do the same work on the same files, one after the other, in this process,
timed as process CPU (every thread) with ``time.process_time``; medians over repeats,
the two sides alternating so that load on the shared machine hits both alike:

- **engine alone**: what a user would write against the library: load the model, take
  its recommended operating point, then per file ``read_events``, ``EventSteps`` and
  ``Engine.run`` with early exit;
- **spikecast run**: ``spikecast run --model M --source DIR`` through the CLI's
  ``main()`` (asyncio service, file reader, stream decider, one JSON line per decision
  to a file), from argument parsing to the exit line.

``overhead`` is spikecast run ÷ engine alone − 1 (issue 10's goal: ≤ 15%). The run's
decisions must equal the engine's (class, steps, SynOps) file by file, and every file
must be decided on every repeat. The interpreter's start and imports are timed once,
as a subprocess (``cli_process``), and reported apart: they are paid once per run,
not per file.

Writes bench/results/filerun.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, MODELS, RESULTS, ROOT, machine

GOAL_OVERHEAD = 0.15


def engine_alone(model: Path, paths: list[Path]) -> tuple[float, list[tuple[int, int, int]], int]:
    """Process CPU seconds, (class, steps, SynOps) per file, and the events read."""
    from spikecast.ext import CompiledNetwork, Engine
    from spikecast.ext.core.calibration import Calibration
    from spikecast.ext.core.network import Network
    from spikecast.ext.engine import EventSteps
    from spikecast.runtime.decision import initial_point
    from spikecast.runtime.readers import read_events

    c0 = time.process_time()
    net = Network.load(model)
    plan = CompiledNetwork(net)
    eng = Engine(plan)
    point = initial_point(net, Calibration(net.calibration)).point
    dt_us = net.input.dt_us
    out, n_events = [], 0
    for p in paths:
        ev = read_events(p).events
        n_events += len(ev)
        t = ev["t"]
        steps = (t - t[0]) // dt_us if len(t) else t
        st = EventSteps.from_arrays(ev["x"], ev["y"], ev["p"], steps, plan.input_shape)
        r = eng.run(st, point.t_max, tau=point.tau, t_min=point.t_min)
        out.append((int(r.class_index), int(r.steps), int(r.total_synops)))
    return time.process_time() - c0, out, n_events


def spikecast_run(model: Path, source: Path) -> tuple[float, list[tuple[int, int, int]], str, int]:
    """Process CPU seconds through the CLI's main(); decisions in file order; the
    summary line; the exit status."""
    from spikecast.runtime.cli import main

    with tempfile.TemporaryFile("w+") as out:
        err = io.StringIO()
        c0 = time.process_time()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["run", "--model", str(model), "--source", str(source)])
        cpu = time.process_time() - c0
        out.seek(0)
        lines = [json.loads(line) for line in out if line.strip()]
    lines.sort(key=lambda d: d["stream"])
    summary = [ln for ln in err.getvalue().splitlines() if ln.startswith("spikecast:")]
    return (cpu, [(d["class_index"], d["steps"], d["synops"]) for d in lines],
            summary[-1] if summary else "", status)


def cli_process(model: Path, source: Path) -> dict[str, float]:
    """One `spikecast run` as a user starts it: CPU and wall of the whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "spikecast.runtime.cli", "run", "--model", str(model),
                    "--source", str(source)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - w0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_s": cpu, "wall_s": wall}


def startup_cpu_s() -> float:
    """CPU of a `spikecast --version`: the interpreter and the CLI's imports."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "spikecast.runtime.cli", "--version"], check=True,
                   stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=MODELS / "nmnist.scn")
    ap.add_argument("--source", type=Path, default=DATA / "nmnist" / "train")
    ap.add_argument("--files", type=int, default=None, help="the first N files (default: all)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS / "filerun.json")
    args = ap.parse_args(argv)
    all_paths = sorted(args.source.glob("*.bin"))
    if not all_paths:
        sys.exit(f"no .bin recordings in {args.source}: see ../shared/data/README.md")
    paths = all_paths[: args.files] if args.files else all_paths
    with tempfile.TemporaryDirectory() as tmp:
        source = args.source
        if len(paths) < len(all_paths):  # a folder holding just these files
            source = Path(tmp)
            for p in paths:
                (source / p.name).symlink_to(p.resolve())
        started = time.time()
        import spikecast.runtime.readers
        import spikecast.runtime.service  # noqa: F401  (imports are not per-file work)
        alone, run, decided, equal = [], [], [], []
        expected: list[tuple[int, int, int]] = []
        summary, status, n_events = "", 0, 0
        for k in range(args.repeats):
            cpu_a, dec_a, n_events = engine_alone(args.model, paths)
            cpu_r, dec_r, summary, status = spikecast_run(args.model, source)
            alone.append(cpu_a)
            run.append(cpu_r)
            expected = dec_a
            decided.append(len(dec_r) == len(paths) and status == 0)
            equal.append(dec_r == dec_a)
            print(f"repeat {k + 1}: engine alone {cpu_a:.2f} s, spikecast run {cpu_r:.2f} s, "
                  f"{len(dec_r)}/{len(paths)} decided, same decisions: {dec_r == dec_a}", flush=True)
        process = cli_process(args.model, source)
        startup = startup_cpu_s()
    a, r = statistics.median(alone), statistics.median(run)
    overhead = r / a - 1.0
    paired = statistics.median(x / y for x, y in zip(run, alone, strict=True)) - 1.0
    result: dict[str, Any] = {
        "command": "python bench/filerun.py" + (f" --files {args.files}" if args.files else "")
        + (f" --repeats {args.repeats}" if args.repeats != 5 else ""),
        "model": str(args.model.resolve().relative_to(ROOT)) if args.model.resolve().is_relative_to(ROOT)
        else str(args.model),
        "files": len(paths),
        "events": n_events,
        "repeats": args.repeats,
        "engine_alone_cpu_s": a,
        "spikecast_run_cpu_s": r,
        "engine_alone_cpu_s_all": alone,
        "spikecast_run_cpu_s_all": run,
        "overhead": overhead,
        "overhead_median_of_paired_repeats": paired,
        "ms_per_file": {"engine_alone": a / len(paths) * 1e3, "spikecast_run": r / len(paths) * 1e3},
        "every_file_decided_every_repeat": all(decided),
        "decisions_equal_engine_alone": all(equal),
        "mean_steps": statistics.fmean(s for _, s, _ in expected),
        "summary_line": summary,
        "exit_status": status,
        "cli_process": process,
        "startup_cpu_s": startup,
        "goals": {"overhead_15pct_met": overhead <= GOAL_OVERHEAD,
                  "every_file_decided_met": all(decided)},
        "seconds": time.time() - started,
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"engine alone {a:.2f} s, spikecast run {r:.2f} s: overhead {100 * overhead:+.1f}% "
          f"(goal <= {100 * GOAL_OVERHEAD:.0f}%); whole process {process['cpu_s']:.2f} s CPU, "
          f"{process['wall_s']:.2f} s wall, of which start-up {startup:.2f} s -> {args.out}")


if __name__ == "__main__":
    main()
