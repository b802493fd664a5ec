"""Two engine builds side by side on the same real N-MNIST decisions, at the same time.

    python bench/ab_engine.py --baseline 64dad24            # this tree against a commit
    python bench/ab_engine.py --baseline 64dad24 --rounds 5 --recordings 100 --repeats 5

The machines are shared and their load changes within minutes, so two builds measured
one after the other differ by as much as a kernel change gains. Here each round runs
both builds at once, one per core (pinned, swapped every round), over the same
recordings; a build's figure is the median of its repeats, and the ratio is taken per
round, then its median over rounds. With one core the two run one after the other,
alternating their order.

The baseline is exported with `git archive`, built in place once (bench/.cache/ab/), and
imported from there (a subprocess per build, nothing installed). Both builds decide with
the same models (the baseline's and this tree's `bench/models/nmnist.scn`) at:
  - each model's own default point (`initial_point`: what `spikecast run` uses), for
    "what a user gets" (each build with its own model: the issue-10 framing);
  - the baseline model's default point and τ 0.67 / t_min 50, on both builds: the same
    network at the same point, the like-for-like engine comparison.
Decisions (class, steps) are compared: two spike-exact engines agree on every recording.
Thread CPU only; JSON and PNG to bench/results/ab_engine.json/.png (--simd PATH: both
builds on that kernel path, to ab_engine_PATH.json/.png).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MODELS, RESULTS, ROOT, machine, write_json

CACHE = ROOT / "bench" / ".cache" / "ab"
PACKAGES = ("ext", "converters", "runtime")


# ----------------------------------------------------------------------------------
# Builds
# ----------------------------------------------------------------------------------


def export_baseline(ref: str) -> Path:
    """The baseline's tree at CACHE/<sha>, its extensions built in place (once)."""
    got = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                         capture_output=True, text=True)
    if got.returncode != 0:
        raise SystemExit(f"--baseline {ref!r} is not a commit of the git repository at {ROOT}")
    sha = got.stdout.strip()
    tree = CACHE / sha
    if not (tree / ".built").exists():
        tree.mkdir(parents=True, exist_ok=True)
        git_archive = ["git", "-C", str(ROOT), "archive", sha]
        archive = subprocess.run(git_archive, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        print(f"building the baseline {ref} ({sha[:10]}) in {tree} ...", file=sys.stderr)
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=tree, check=True,
                       stdout=subprocess.DEVNULL)
        (tree / ".built").write_text(sha)
    return tree


def import_root(tree: Path, where: Path) -> Path:
    """A folder whose `spikecast` package is `tree`'s: a regular package (an __init__.py),
    so it wins over the installed editable one, with symlinks to tree's subpackages."""
    pkg = where / "spikecast"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for name in PACKAGES:
        (pkg / name).symlink_to(tree / name, target_is_directory=True)
    return where


# ----------------------------------------------------------------------------------
# Worker: one build, run in its own process with PYTHONPATH at its import root
# ----------------------------------------------------------------------------------


def worker(events: Path, jobs: list[dict[str, Any]], repeats: int, expect_root: str,
           simd: str | None = None) -> dict[str, Any]:
    """Thread CPU per decision for each job (model, τ, t_min), median over repeats, on the
    kernel path `simd` (default: the CPU's widest)."""
    import spikecast.ext as ext
    from spikecast.ext import _engine  # type: ignore[attr-defined]
    from spikecast.ext.core.calibration import Calibration
    from spikecast.ext.core.network import Network
    from spikecast.ext.engine import EventSteps
    from spikecast.runtime.decision import initial_point

    if not str(Path(_engine.__file__)).startswith(expect_root):
        raise SystemExit(f"imported {_engine.__file__}, not the build under {expect_root}")
    if simd:
        _engine.set_simd_level(simd)
    with np.load(events, allow_pickle=False) as z:
        cols = {k: z[k] for k in z.files}
    bounds = np.cumsum(np.r_[0, cols["n"]])
    out = []
    for job in jobs:
        net = Network.load(job["model"])
        plan = ext.CompiledNetwork(net)
        steps = [EventSteps.from_arrays(*(cols[k][a:b] for k in ("x", "y", "p", "step")), plan.input_shape)
                 for a, b in itertools.pairwise(bounds)]
        tau, t_min = job["tau"], job["t_min"]
        if tau is None:
            point = initial_point(net, Calibration(net.calibration)).point
            tau, t_min = point.tau, point.t_min
        eng = ext.Engine(plan)
        times: list[float] = []
        decisions: list[tuple[int, int]] = []
        for _ in range(repeats + 1):  # the first pass warms caches and is not counted
            decisions = []
            c0 = time.thread_time()
            for st in steps:
                r = eng.run(st, 10_000, tau=tau, t_min=t_min)
                decisions.append((int(r.class_index), int(r.steps)))
            times.append(time.thread_time() - c0)
        cpu_ms = statistics.median(times[1:]) / len(steps) * 1e3
        out.append({**job, "tau": tau, "t_min": t_min, "cpu_ms": cpu_ms,
                    "mean_steps": float(np.mean([d[1] for d in decisions])), "decisions": decisions})
    path = getattr(_engine, "simd_level", lambda: "unknown")()
    return {"engine": str(Path(_engine.__file__).resolve()), "simd": path, "jobs": out}


# ----------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------


def save_events(n_recordings: int, path: Path) -> None:
    """The first n held-out test recordings (bench/engine.py's stream section uses 100), as flat columns."""
    import nmnist as nm

    recs = nm.held_out_recordings(n_recordings)
    np.savez(path, x=np.concatenate([e["x"] for e in recs]), y=np.concatenate([e["y"] for e in recs]),
             p=np.concatenate([e["p"] for e in recs]).astype(np.int64),
             step=np.concatenate([nm.event_steps(e) for e in recs]), n=np.array([len(e) for e in recs]))


def jobs_for(own_model: Path, base_model: Path) -> list[dict[str, Any]]:
    return [
        {"name": "own_default", "model": str(own_model), "tau": None, "t_min": None},
        {"name": "base_default", "model": str(base_model), "tau": None, "t_min": None},
        {"name": "base_tau0.67_tmin50", "model": str(base_model), "tau": 0.67, "t_min": 50},
    ]


def launch(root: Path, events: Path, jobs: list[dict[str, Any]], repeats: int, core: int | None,
           out: Path, simd: str | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(out), "--events", str(events),
           "--jobs", json.dumps(jobs), "--repeats", str(repeats), "--expect-root", str(root)]
    if simd:
        cmd += ["--simd", simd]
    pin = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
    return subprocess.Popen(cmd, env=env, preexec_fn=pin, cwd=str(root))


def summarize(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per job: each build's CPU ms per decision by round, and baseline ÷ candidate per round."""
    names = [j["name"] for j in rounds[0]["candidate"]["jobs"]]
    out: dict[str, Any] = {}
    for i, name in enumerate(names):
        base = [r["baseline"]["jobs"][i]["cpu_ms"] for r in rounds]
        cand = [r["candidate"]["jobs"][i]["cpu_ms"] for r in rounds]
        ratios = [b / c for b, c in zip(base, cand, strict=True)]
        bj, cj = rounds[0]["baseline"]["jobs"][i], rounds[0]["candidate"]["jobs"][i]
        same = bj["decisions"] == cj["decisions"]
        agree = float(np.mean([a == b for a, b in zip(bj["decisions"], cj["decisions"], strict=True)]))
        out[name] = {
            "baseline": {"tau": bj["tau"], "t_min": bj["t_min"], "mean_steps": bj["mean_steps"],
                         "cpu_ms_by_round": base, "cpu_ms_median": statistics.median(base)},
            "candidate": {"tau": cj["tau"], "t_min": cj["t_min"], "mean_steps": cj["mean_steps"],
                          "cpu_ms_by_round": cand, "cpu_ms_median": statistics.median(cand)},
            "speedup_by_round": ratios,
            "speedup_median": statistics.median(ratios),
            "same_decisions": same,
            "decision_agreement": agree,
        }
    return out


def round_summary(res: dict[str, Any]) -> dict[str, Any]:
    """A worker's result without its decisions: the build, its SIMD path, CPU ms per job."""
    cpu_ms = {j["name"]: j["cpu_ms"] for j in res["jobs"]}
    return {k: v for k, v in res.items() if k != "jobs"} | {"cpu_ms": cpu_ms}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jobs = result["jobs"]
    names = list(jobs)
    xs = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for off, who, label in ((-0.2, "baseline", result["baseline"]), (0.2, "candidate", "this tree")):
        med = [jobs[n][who]["cpu_ms_median"] for n in names]
        ax.bar(xs + off, med, 0.4, label=label)
        for r in range(len(result["rounds"])):
            ax.plot(xs + off, [jobs[n][who]["cpu_ms_by_round"][r] for n in names], "k.", ms=3)
    labels = [f"{n}\n{jobs[n]['speedup_median']:.2f}x" for n in names]
    ax.set_xticks(xs, labels)
    ax.set_ylabel("CPU ms per decision (median; dots: rounds)")
    ax.set_title(f"Real N-MNIST decisions, both builds at once, {len(result['rounds'])} rounds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", help="a commit (or any git ref) to compare this tree against")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--recordings", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--simd", choices=("avx512f", "avx2", "portable"),
                    help="force this kernel path in both builds (default: the CPU's widest)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--events", help=argparse.SUPPRESS)
    ap.add_argument("--jobs", help=argparse.SUPPRESS)
    ap.add_argument("--expect-root", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        res = worker(Path(args.events), json.loads(args.jobs), args.repeats, args.expect_root, args.simd)
        Path(args.worker).write_text(json.dumps(res))
        return
    if not args.baseline:
        ap.error("--baseline is required")
    t0 = time.time()
    base_tree = export_baseline(args.baseline)
    cores = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        events = tmp / "events.npz"
        save_events(args.recordings, events)
        roots = {"baseline": import_root(base_tree, tmp / "baseline"),
                 "candidate": import_root(ROOT, tmp / "candidate")}
        base_model = base_tree / "bench" / "models" / "nmnist.scn"
        jobs = jobs_for(MODELS / "nmnist.scn", base_model)
        base_jobs = jobs_for(base_model, base_model)
        rounds = []
        for r in range(args.rounds):
            order = ["baseline", "candidate"] if r % 2 == 0 else ["candidate", "baseline"]
            outs = {who: tmp / f"{who}{r}.json" for who in order}
            procs = []
            for i, who in enumerate(order):
                core = cores[i] if len(cores) >= 2 else None
                procs.append(launch(roots[who], events, base_jobs if who == "baseline" else jobs,
                                    args.repeats, core, outs[who], args.simd))
                if core is None:  # one core: one build after the other
                    procs[-1].wait()
            for p in procs:
                if p.wait() != 0:
                    raise SystemExit(f"a worker failed (exit {p.returncode}); see its traceback above")
            rounds.append({who: json.loads(outs[who].read_text()) for who in order})
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{who} {j['name']} {j['cpu_ms']:.3f} ms" for who in order for j in rounds[-1][who]["jobs"]),
                file=sys.stderr)
    jobs_summary = summarize(rounds)
    result = {
        "baseline": args.baseline,
        "baseline_sha": (base_tree / ".built").read_text(),
        "candidate_sha": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                        text=True).stdout.strip(),
        "candidate_dirty": bool(subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", *PACKAGES],
            capture_output=True, text=True,
        ).stdout.strip()),
        "recordings": args.recordings,
        "repeats": args.repeats,
        "paired": len(cores) >= 2,
        "simd": args.simd or "the CPU's widest",
        "jobs": jobs_summary,
        "rounds": [{who: round_summary(res) for who, res in rd.items()} for rd in rounds],
        "notes": "own_default: each build with its own bench/models/nmnist.scn at that model's default "
                 "point; base_*: the baseline's model on both builds. Thread CPU per decision over the "
                 "recordings, median of repeats; speedup = baseline / candidate per round, median "
                 "over rounds.",
        "command": "python bench/ab_engine.py " + " ".join(sys.argv[1:]),
        "seconds": time.time() - t0,
        "machine": machine(),
    }
    stem = "ab_engine" + (f"_{args.simd}" if args.simd else "")
    write_json(f"{stem}.json", result)
    plot(result, RESULTS / f"{stem}.png")
    for name, j in jobs_summary.items():
        b, c = j["baseline"], j["candidate"]
        print(f"{name:>20}: baseline {b['cpu_ms_median']:.3f} ms ({b['mean_steps']:.1f} steps), "
              f"this tree {c['cpu_ms_median']:.3f} ms ({c['mean_steps']:.1f} steps): "
              f"{j['speedup_median']:.2f}x (rounds {', '.join(f'{x:.2f}' for x in j['speedup_by_round'])}); "
              f"same decisions: {j['same_decisions']} ({j['decision_agreement']:.0%})")


if __name__ == "__main__":
    main()
