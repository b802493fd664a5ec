"""Fuzz every input parser spikecast exposes to untrusted bytes.

    python bench/fuzz.py                # 10,000 inputs per target (a few minutes)
    python bench/fuzz.py --quick        # 300 per target (the CI test, < 60 s)
    python bench/fuzz.py --targets packet,cmd_set --n 2000   # updates those entries

Targets: every event-file reader (N-MNIST ``.bin``, AEDAT4, EVT 2.0, EVT 3.0,
Prophesee ``.dat``, ``.npy``, ``.npz``), the SCEV live-packet decoder
(``decode_packet``), the model loader (``load_network``) and the service's
``cmd/set`` handling (``Service._command``: size limit, JSON parse, object check,
``set_point``: the whole path a command payload takes, less the MQTT receive loop).

Inputs. A seeded mutation fuzzer (no coverage feedback; atheris is not installed
here and hypothesis' engine is built for properties, not for a fixed budget of raw
byte inputs watched from outside): input ``i`` of target ``T`` is a function of
(seed, T, i) only, so a run is reproducible and a worker can resume after a crash.
Seeds are small valid files: the heads of the real recordings in
``../shared/data/dvs`` (cut at a record or packet boundary, <= 64 kB), N-MNIST
samples, ``.npy``/``.npz`` files and SCEV packets built from their events, a small
Network, and JSON commands. Mutations (1-8 stacked): bit flips, random bytes,
"interesting" integers (0, -1, 2**31-1, 2**63-1, ...) written at a random offset in
either byte order, chunk deletion, duplication, insertion, truncation, appended
noise and splices with another seed. Structure-aware mutations go past checksums:
``.npz``/``.scn`` members are mutated and re-zipped (valid CRCs), the Network
manifest gets random JSON values in random fields with its sha256 recomputed, and
commands get random JSON values (deep nesting, huge and non-finite numbers, wrong
types). Every input is at most 64 kB.

Observation. Each target runs in a worker subprocess (``--worker``) that writes one
byte per input as it finishes (``k`` accepted, ``c`` clean SpikecastError, ``o``
any other exception, ``h`` hang): a crash (death by a signal) is seen from outside,
counted, and the worker restarted after the input that killed it. A hang is an input
that runs past ``--input-timeout-s`` (a SIGALRM inside the worker), or a worker
that stops writing for ``--worker-timeout-s`` (killed from outside). Memory: before
each input the worker resets its peak RSS (``/proc/self/clear_refs``), after it reads
``VmHWM``; ``extra`` = peak minus the RSS before; the peak of traced allocations
(tracemalloc: Python objects and numpy buffers) is taken over the same input; both
after one uncounted warm-up parse of the first seed. ``peak_rss_mb`` is the worker's
whole peak (interpreter and numpy included). The memory goal is on the traced peak:
``worst_memory_over_input`` is the largest traced peak / max(input size,
``memory_floor_bytes`` = 64 kB) over every input, and ``memory_goal_met`` says whether
it is at most 20. The floor stands for what one parse costs whatever its input (numpy's
.npy header parser, the chunked decoders' fixed workspace, the zip directory).
``worst_rss_growth_over_input`` is the same ratio for the growth of the resident set
(page-granular, and the allocator keeps what it once took, so it is an upper bound);
``max_alloc_per_input_mb`` and ``max_rss_growth_per_input_mb`` give the absolute
figures.

Writes bench/results/fuzz.json (``--quick`` writes bench/results/fuzz-quick.json
unless ``--out`` says otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import re
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPIKECAST_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results"
MAX_INPUT = 64 * 1024
TARGETS = ("nmnist", "aedat4", "evt2", "evt3", "dat", "npy", "npz", "packet", "network", "cmd_set")
SUFFIX = {"nmnist": ".bin", "aedat4": ".aedat4", "evt2": ".raw", "evt3": ".raw", "dat": ".dat",
          "npy": ".npy", "npz": ".npz", "network": ".scn"}
#: Memory goal: the traced peak of one parse <= MEMORY_GOAL x max(input size, this floor).
#: The floor covers what one parse costs whatever the input: numpy's .npy header parser
#: (headers up to 1 kB), the chunked Prophesee decoders' workspace (2,048 words a chunk,
#: about 0.33 MB for EVT 3.0), the zip directory, the interpreter's own temporaries.
MEMORY_FLOOR_BYTES = 64 * 1024
MEMORY_GOAL = 20
EXAMPLES_KEPT = 5


# -- seeds ----------------------------------------------------------------------------


def _read_head(path: Path, n: int) -> bytes:
    with path.open("rb") as f:
        return f.read(n)


def _aedat4_head(path: Path) -> bytes:
    """The header and the whole packets that fit in MAX_INPUT (no data table)."""
    data = _read_head(path, 4 * MAX_INPUT)
    (hlen,) = struct.unpack_from("<I", data, 14)
    end = pos = 18 + hlen
    while pos + 8 <= len(data):
        _, size = struct.unpack_from("<iI", data, pos)
        if pos + 8 + size > MAX_INPUT:
            break
        pos += 8 + size
        end = pos
    # Say "no data table" (-1): the head ends where the packets do.
    from spikecast.runtime.readers.aedat4 import _data_table_position

    table_at = _data_table_position(data, path)
    header = bytearray(data[18 : 18 + hlen])
    if table_at >= 0:
        off = header.rfind(struct.pack("<q", table_at))
        struct.pack_into("<q", header, off, -1)
    return data[:18] + bytes(header) + data[18 + hlen : end]


def _prophesee_head(path: Path, word: int) -> bytes:
    data = _read_head(path, MAX_INPUT)
    body = 0
    while data.startswith(b"%", body):
        body = data.index(b"\n", body) + 1
    return data[: body + (len(data) - body) // word * word]


def _events(n: int = 3000) -> np.ndarray:
    from spikecast.runtime.readers import read_events

    ev = read_events(DATA / "dvs" / "nmnist_sample.bin").events[:n]
    return ev


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _small_network() -> Any:
    from spikecast.ext.core.calibration import CalibrationTable
    from spikecast.ext.core.network import InputSpec, Layer, Network

    rng = np.random.default_rng(0)
    layers = (
        Layer("conv", "c1", (2, 6, 5), (3, 3, 3), rng.normal(size=(3, 2, 3, 3)).astype(np.float32),
              rng.normal(size=3).astype(np.float32), (3, 3), (2, 2), (1, 1), lam=2.5),
        Layer("maxpool", "p1", (3, 3, 3), (3, 1, 1), kernel=(2, 2), stride=(2, 2), lam=2.5),
        Layer("linear", "fc", (3, 1, 1), (4,), rng.normal(size=(4, 3)).astype(np.float32),
              np.zeros(4, np.float32), spiking=False),
    )
    calib = CalibrationTable(rng.random((7, 5)).astype(np.float32), rng.random((7, 5)) > 0.5)
    return Network(InputSpec("events", (2, 6, 5), dt_us=500), layers, ("a", "b", "c", "d"),
                   reset="zero", temperature=0.5, calibration=calib, meta={"percentile": 99.9})


def _network_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return _small_network().save(Path(tmp) / "n.scn").read_bytes()


COMMANDS = [b'{"tau": 0.9}', b'{"t_min": 3, "t_max": 50}', b'{"target_accuracy": 0.95}',
            b'{"tau": 0.5, "t_min": 1, "t_max": 100, "target_accuracy": null}', b"{}"]


def seeds(target: str) -> list[bytes]:  # noqa: PLR0911  (one seed set per target)
    dvs = DATA / "dvs"
    if target == "nmnist":
        return [_read_head(dvs / "nmnist_sample.bin", MAX_INPUT // 5 * 5),
                *(_read_head(p, MAX_INPUT // 5 * 5)
                  for p in sorted((DATA / "nmnist" / "train").glob("*.bin"))[:2])]
    if target == "aedat4":
        return [_aedat4_head(dvs / "dvxplorer_320x240.aedat4")]
    if target == "evt2":
        return [_prophesee_head(dvs / "gen3_640x480_evt2.raw", 4)]
    if target == "evt3":
        return [_prophesee_head(dvs / "gen41_1280x720_evt3.raw", 2)]
    if target == "dat":
        return [_read_head(dvs / "ncars_sample.dat", MAX_INPUT)]
    ev = _events()
    cols = np.stack([ev["x"], ev["y"], ev["t"], ev["p"]], axis=1).astype(np.int64)
    if target == "npy":
        return [_npy(ev), _npy(cols[:1500]), _npy(ev[:50])]
    if target == "npz":
        return [_npz(events=ev, width=np.int64(34), height=np.int64(34)), _npz(events=cols[:1500]),
                _npz(events=ev[:100], width=np.int64(34), height=np.int64(34))]
    if target == "packet":
        from spikecast.runtime.packets import encode_packet

        first = int(ev["t"][0])
        return [bytes(encode_packet(ev[:k], 34, 34, t0_us=t0))
                for k, t0 in ((0, 0), (1, first), (50, max(0, first - 5)), (3000, first))]
    if target == "network":
        return [_network_bytes()]
    if target == "cmd_set":
        return list(COMMANDS)
    raise SystemExit(f"unknown target {target}")


# -- mutations --------------------------------------------------------------------------

_INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
                0x80000000, 0xFFFFFFFF, 2**53, 2**63 - 1, 2**63, 2**64 - 1, 34, 35, 1000, 10**6)


def _interesting(rng: random.Random, data: bytearray) -> None:
    width = rng.choice((1, 2, 4, 8))
    value = rng.choice(_INTERESTING) % (1 << (8 * width))
    if rng.random() < 0.3:
        value = (-value) % (1 << (8 * width))
    raw = value.to_bytes(width, rng.choice(("little", "big")))
    pos = rng.randrange(max(1, len(data) - width + 1))
    data[pos : pos + width] = raw


def mutate_bytes(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 6, 8))):
        op = rng.randrange(10)
        n = len(buf)
        if op == 0 and n:
            pos = rng.randrange(n)
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            buf[rng.randrange(n)] = rng.randrange(256)
        elif op == 2 and n:
            _interesting(rng, buf)
        elif op == 3 and n:
            a = rng.randrange(n)
            del buf[a : a + rng.randint(1, 64)]
        elif op == 4 and n:
            a = rng.randrange(n)
            chunk = buf[a : a + rng.randint(1, 256)]
            buf[a:a] = chunk * rng.randint(1, 4)
        elif op == 5:
            buf[rng.randrange(n + 1) : rng.randrange(n + 1)] = rng.randbytes(rng.randint(1, 32))
        elif op == 6:
            del buf[rng.randrange(n + 1) :]
        elif op == 7:
            buf += rng.randbytes(rng.randint(1, 512))
        elif op == 8:
            other = rng.choice(pool)
            cut = rng.randrange(len(other) + 1)
            buf = buf[: rng.randrange(n + 1)] + bytearray(other[cut:])
        elif op == 9 and n > 16:
            # Overwrite a field near the front, where headers live.
            pos = rng.randrange(min(n, 64))
            buf[pos : pos + 4] = rng.randbytes(4)
    return bytes(buf[:MAX_INPUT])


def random_json(rng: random.Random, depth: int = 0) -> Any:  # noqa: PLR0911  (one kind per return)
    kind = rng.randrange(10 if depth < 4 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice((True, False))
    if kind == 2:
        return rng.choice((0, 1, -1, 2, 3, 50, 10**4, 10**4 + 1, 2**31, 2**63, 10**400, -(10**30)))
    if kind == 3:
        return rng.choice((0.0, -0.0, 0.5, 0.9, 1.0, 1.5, -0.1, 1e-320, 1e308, float("inf"),
                           float("-inf"), float("nan")))
    if kind == 4:
        return rng.uniform(-2, 2)
    if kind == 5:
        return rng.choice(("", "0.9", "tau", "nan", "\u0000", "x" * rng.randint(0, 300)))
    if kind == 6:
        return rng.randint(-(2**70), 2**70)
    if kind in (7, 8):
        keys = ("tau", "t_min", "t_max", "target_accuracy", "policy", "", "x")
        return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}
    return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def mutate_command(rng: random.Random, pool: list[bytes]) -> bytes:
    r = rng.random()
    if r < 0.45:
        body = json.loads(rng.choice(pool))
        for _ in range(rng.randint(1, 3)):
            body[rng.choice(("tau", "t_min", "t_max", "target_accuracy", "other"))] = random_json(rng)
        return json.dumps(body).encode()
    if r < 0.6:
        return json.dumps(random_json(rng)).encode()
    if r < 0.67:
        depth = rng.choice((10, 100, 1000, 5000, 100_000))
        return (rng.choice(("[", '{"a":')) * depth)[:MAX_INPUT].encode()
    if r < 0.72:
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 6000)))
        return b'{"tau": ' + digits.encode() + rng.choice((b"", b".5", b"e999", b"e-999")) + b"}"
    return mutate_bytes(rng, rng.choice(pool), pool)


def _rezip(members: dict[str, bytes], compression: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _manifest_mutation(rng: random.Random, members: dict[str, bytes]) -> dict[str, bytes]:
    """A random JSON value in a random field of the manifest, sha256 recomputed."""
    from spikecast.ext.core import network as netmod

    raw = np.load(io.BytesIO(members["manifest.npy"]), allow_pickle=False)
    manifest = json.loads(raw.tobytes().decode())
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in items:
            paths.append((node, k))
            if isinstance(v, (dict, list)):
                walk(v)

    walk(manifest)
    for _ in range(rng.randint(1, 3)):
        node, key = rng.choice(paths)
        node[key] = random_json(rng)
    try:
        arrays = {name[:-4]: np.load(io.BytesIO(b), allow_pickle=False)
                  for name, b in members.items() if name != "manifest.npy"}
        manifest["sha256"] = netmod._digest({k: v for k, v in manifest.items() if k != "sha256"}, arrays)
    except Exception:  # a mutated manifest the digest cannot encode: keep the old hash
        pass
    text = json.dumps(manifest, allow_nan=True).encode()
    return {**members, "manifest.npy": _npy(np.frombuffer(text, np.uint8))}


def mutate_zip(rng: random.Random, data: bytes, pool: list[bytes], manifest: bool) -> bytes:
    r = rng.random()
    if r < 0.4:
        return mutate_bytes(rng, data, pool)
    members = _members(data)
    if manifest and r < 0.75:
        try:
            members = _manifest_mutation(rng, members)
        except Exception:  # a seed mutation that does not apply: mutate bytes
            return mutate_bytes(rng, data, pool)
    else:
        name = rng.choice(sorted(members))
        members[name] = mutate_bytes(rng, members[name], [members[name]])
        if rng.random() < 0.1:
            members[rng.choice(sorted(members))] = members[name]
    comp = rng.choice((zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED))
    return _rezip(members, comp)[:MAX_INPUT]


def make_input(target: str, seed: int, i: int, pool: list[bytes]) -> bytes:
    rng = random.Random(f"{seed}:{target}:{i}")
    if i < len(pool):
        return pool[i]  # every seed once, unmutated: the parser must accept it
    if target == "cmd_set":
        return mutate_command(rng, pool)
    if target in ("npz", "network"):
        return mutate_zip(rng, rng.choice(pool), pool, manifest=target == "network")
    return mutate_bytes(rng, rng.choice(pool), pool)


# -- the targets ------------------------------------------------------------------------


class _NullPublisher:
    async def publish(self, *args: Any, **kwargs: Any) -> None:
        return None

    def stats(self) -> Any:
        return None


def _command_target() -> Callable[[bytes], Any]:
    from spikecast.runtime.config import RunConfig
    from spikecast.runtime.decision import OperatingPoint
    from spikecast.runtime.service import Service

    tmp = Path(tempfile.mkdtemp(prefix="spikecast-fuzz-"))
    model = _small_network().save(tmp / "n.scn")
    cfg = RunConfig(model=model, source="mqtt", device="fuzz",
                    point=OperatingPoint(tau=0.9, t_min=1, t_max=100))
    svc = Service(cfg, _NullPublisher())  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    start = svc.state.point

    def run(payload: bytes) -> Any:
        svc.state.point = start
        return loop.run_until_complete(svc._command("spikecast/fuzz/cmd/set", payload))

    return run


def target_function(target: str, workdir: Path) -> Callable[[bytes], Any]:
    if target == "cmd_set":
        return _command_target()
    if target == "packet":
        from spikecast.runtime.packets import decode_packet

        return decode_packet
    if target == "network":
        from spikecast.ext.core.network import load_network

        reader: Callable[[Path], Any] = load_network
    else:
        from spikecast.runtime.readers import READERS

        reader = READERS["npy" if target == "npz" else target]
    path = workdir / f"input{SUFFIX[target]}"

    def run(data: bytes) -> Any:
        path.write_bytes(data)
        return reader(path)

    return run


# -- the worker (one target, in its own process) ------------------------------------------


class Hang(BaseException):
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang


def _memory_kb() -> tuple[int, int]:
    s = Path("/proc/self/status").read_text()
    hwm = re.search(r"VmHWM:\s+(\d+)", s)
    rss = re.search(r"VmRSS:\s+(\d+)", s)
    return (int(hwm.group(1)) if hwm else 0), (int(rss.group(1)) if rss else 0)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class _Memory:
    """Per input: the peak of traced allocations (Python objects and numpy buffers, via
    tracemalloc) and the growth of the resident set (native allocations too)."""

    def __init__(self) -> None:
        self.can_reset = _reset_peak()
        self.max_alloc_kb = self.max_rss_kb = 0.0
        self.worst_ratio = self.worst_rss_ratio = 0.0
        self.worst: dict[str, Any] = {}
        tracemalloc.start()

    def before(self) -> None:
        if self.can_reset:
            _reset_peak()
        self._rss = _memory_kb()[1]
        tracemalloc.reset_peak()
        self._alloc = tracemalloc.get_traced_memory()[0]

    def after(self, i: int, size: int) -> None:
        alloc_kb = (tracemalloc.get_traced_memory()[1] - self._alloc) / 1024
        rss_kb = max(0, _memory_kb()[0] - self._rss) if self.can_reset else 0
        self.max_alloc_kb = max(self.max_alloc_kb, alloc_kb)
        self.max_rss_kb = max(self.max_rss_kb, rss_kb)
        # The goal's measure: the traced peak against max(input size, the stated floor).
        ratio = alloc_kb * 1024 / max(size, MEMORY_FLOOR_BYTES)
        self.worst_rss_ratio = max(self.worst_rss_ratio, rss_kb * 1024 / max(size, MEMORY_FLOOR_BYTES))
        if ratio > self.worst_ratio:
            self.worst_ratio = ratio
            self.worst = {"i": i, "bytes": size, "alloc_kb": round(alloc_kb, 1), "rss_kb": rss_kb}

    def note(self) -> dict[str, Any]:
        return {"kind": "done", "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "peak_reset": self.can_reset, "max_alloc_kb": self.max_alloc_kb,
                "max_rss_kb": self.max_rss_kb, "worst_ratio": self.worst_ratio, "worst": self.worst,
                "worst_rss_ratio": self.worst_rss_ratio}


def _attempt(fn: Callable[[bytes], Any], data: bytes, i: int) -> tuple[bytes, dict[str, Any] | None]:
    """(mark, note): k accepted, c SpikecastError, o any other exception, h hang."""
    from spikecast.ext.core.errors import SpikecastError

    try:
        fn(data)
    except Hang:
        return b"h", {"kind": "hang", "i": i, "bytes": len(data)}
    except SpikecastError:
        return b"c", None
    except Exception as exc:  # what the fuzzer is here to find
        return b"o", {"kind": "other", "i": i, "bytes": len(data), "type": type(exc).__name__,
                      "message": str(exc)[:300]}
    return b"k", None


def worker(args: argparse.Namespace) -> None:
    import warnings

    warnings.simplefilter("ignore")  # e.g. UnverifiedManifestWarning: not what is measured
    signal.signal(signal.SIGALRM, _on_alarm)
    pool = seeds(args.target)
    with tempfile.TemporaryDirectory(prefix="spikecast-fuzz-") as tmp, \
            open(args.details, "a") as details:
        fn = target_function(args.target, Path(tmp))
        marks = os.open(args.marks, os.O_WRONLY | os.O_APPEND)
        # One uncounted parse of the first seed: lazy imports and the allocator's first
        # arenas are not what one input costs.
        _attempt(fn, pool[0], -1)
        mem = _Memory()
        for i in range(args.start, args.n):
            data = make_input(args.target, args.seed, i, pool)
            mem.before()
            signal.setitimer(signal.ITIMER_REAL, args.input_timeout_s)
            try:
                mark, note = _attempt(fn, data, i)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            mem.after(i, len(data))
            if note is not None:
                details.write(json.dumps(note) + "\n")
                details.flush()
            os.write(marks, mark)
            if i % 500 == 0 or i == args.n - 1:  # the maxima so far survive a crash
                details.write(json.dumps(mem.note()) + "\n")
                details.flush()


def real_files_memory() -> dict[str, Any]:
    """Peak memory of reading each whole real recording once (in this worker process)."""
    from spikecast.runtime.readers import read_events

    out: dict[str, Any] = {}
    for path in sorted((DATA / "dvs").iterdir()):
        read_events(path)  # warm-up: imports, first arenas
        _reset_peak()
        rss = _memory_kb()[1]
        tracemalloc.start()
        rec = read_events(path)
        alloc = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        grow = max(0, _memory_kb()[0] - rss) * 1024
        size = path.stat().st_size
        out[path.name] = {"bytes": size, "events": int(rec.events.size),
                          "alloc_mb": round(alloc / 2**20, 2), "rss_growth_mb": round(grow / 2**20, 2),
                          "over_file": round(max(alloc, grow) / size, 2)}
    return out


# -- the driver ---------------------------------------------------------------------------


def _spawn(
    args: argparse.Namespace, target: str, start: int, marks: Path, details: Path, stderr: Path
) -> Any:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", target, "--n", str(args.n),
           "--seed", str(args.seed), "--start", str(start), "--marks", str(marks),
           "--details", str(details), "--input-timeout-s", str(args.input_timeout_s)]
    # Rust's default (no backtrace on a panic): with RUST_BACKTRACE=1 each panic the aedat
    # package turns into an error would load debug info, ~48 MB, into the worker.
    env = {**os.environ, "RUST_BACKTRACE": "0"}
    with stderr.open("wb") as err:  # a file, not a pipe: 10,000 panic messages must not block
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)


def _wait(proc: Any, marks: Path, timeout_s: float) -> tuple[int | None, int]:
    """(exit status or None if it stalled and was killed, peak RSS kB of that worker)."""
    last, progress_at = -1, time.monotonic()
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss
        size = marks.stat().st_size
        if size != last:
            last, progress_at = size, time.monotonic()
        elif time.monotonic() - progress_at > timeout_s:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            return None, usage.ru_maxrss
        time.sleep(0.05)


def run_target(args: argparse.Namespace, target: str, workdir: Path) -> dict[str, Any]:
    marks, details = workdir / f"{target}.marks", workdir / f"{target}.details"
    marks.write_bytes(b"")
    details.write_text("")
    crashes: list[dict[str, Any]] = []
    stalls = 0
    peak_kb = 0
    t0 = time.monotonic()
    while True:
        start = marks.stat().st_size
        if start >= args.n:
            break
        err = workdir / f"{target}.stderr"
        proc = _spawn(args, target, start, marks, details, err)
        try:
            code, rss_kb = _wait(proc, marks, args.worker_timeout_s)
        finally:
            if proc.returncode is None:  # interrupted: leave no worker behind
                proc.kill()
        stderr = err.read_bytes()[-20_000:].decode(errors="replace")
        peak_kb = max(peak_kb, rss_kb)
        done = marks.stat().st_size
        if code == 0 and done >= args.n:
            break
        # The input that was running when the worker died or stalled is index `done`.
        with marks.open("ab") as f:
            f.write(b"h" if code is None else b"x")  # "x": killed by a signal
        if code is None:
            stalls += 1
        elif code > 0:  # a Python error of this harness (e.g. in making an input), not a crash
            raise SystemExit(f"{target}: worker exited {code} at input {done}:\n{stderr[-3000:]}")
        else:
            crashes.append({"i": done, "exit": code, "stderr_tail": stderr[-500:]})
    seconds = time.monotonic() - t0
    counts = marks.read_bytes()
    notes = [json.loads(line) for line in details.read_text().splitlines() if line.strip()]
    others = [n for n in notes if n["kind"] == "other"]
    done = [n for n in notes if n["kind"] == "done"]
    worst = max(done, key=lambda n: n["worst_ratio"], default={"worst_ratio": 0.0, "worst": {}})
    first_types: dict[str, int] = {}
    for n in others:
        key = f"{n['type']}: {n['message'][:80]}"
        first_types[key] = first_types.get(key, 0) + 1
    return {
        "inputs": len(counts),
        "accepted": counts.count(b"k"),
        "clean_errors": counts.count(b"c"),
        "other_exceptions": counts.count(b"o"),
        "crashes": counts.count(b"x"),
        "hangs": counts.count(b"h"),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "max_input_kb": round(max(len(s) for s in seeds(target)) / 1024, 1) if target != "cmd_set"
        else round(MAX_INPUT / 1024, 1),
        "max_alloc_per_input_mb": round(max((n["max_alloc_kb"] for n in done), default=0) / 1024, 2),
        "max_rss_growth_per_input_mb": round(max((n["max_rss_kb"] for n in done), default=0) / 1024, 2),
        "worst_memory_over_input": round(worst["worst_ratio"], 2),
        "worst_memory_input": worst["worst"],
        "memory_floor_bytes": MEMORY_FLOOR_BYTES,
        "memory_goal_met": worst["worst_ratio"] <= MEMORY_GOAL,
        "worst_rss_growth_over_input": round(max((n.get("worst_rss_ratio", 0.0) for n in done),
                                                 default=0.0), 2),
        "peak_reset_supported": all(n["peak_reset"] for n in done) if done else None,
        "seconds": round(seconds, 1),
        "other_exception_examples": [{"i": n["i"], "type": n["type"], "message": n["message"]}
                                     for n in others[:EXAMPLES_KEPT]],
        "other_exception_kinds": dict(sorted(first_types.items(), key=lambda kv: -kv[1])[:10]),
        "crash_examples": crashes[:EXAMPLES_KEPT],
        "stalled_workers": stalls,
    }


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally clauses
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="300 inputs per target")
    ap.add_argument("--n", type=int, default=None, help="inputs per target (default 10,000)")
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--input-timeout-s", type=float, default=5.0)
    ap.add_argument("--worker-timeout-s", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--marks", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--details", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.n is None:
        args.n = 300 if args.quick else 10_000
    if args.worker == "real_files":
        print(json.dumps(real_files_memory()))
        return
    if args.worker:
        args.target = args.worker
        worker(args)
        return
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        ap.error(f"unknown targets {sorted(unknown)}; choose from {TARGETS}")
    out = args.out or RESULTS / ("fuzz-quick.json" if args.quick else "fuzz.json")
    # A subset of the targets updates their entries and keeps the others' (each entry says
    # when it was run: "date").
    results: dict[str, Any] = {}
    if out.exists() and set(targets) != set(TARGETS):
        results = {k: v for k, v in json.loads(out.read_text()).items() if k != "_meta"}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spikecast-fuzz-") as tmp:
        for target in targets:
            results[target] = r = run_target(args, target, Path(tmp))
            r["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
            print(f"{target:8s} {r['inputs']:6d} inputs  accepted {r['accepted']:5d}  clean "
                  f"{r['clean_errors']:5d}  other {r['other_exceptions']:3d}  crashes {r['crashes']}  "
                  f"hangs {r['hangs']}  peak {r['peak_rss_mb']} MB  worst x{r['worst_memory_over_input']}"
                  f"  {r['seconds']} s", flush=True)
    real = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", "real_files"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RUST_BACKTRACE": "0"})
    payload = {
        "real_files_memory": json.loads(real.stdout) if real.returncode == 0 else real.stderr[-2000:],
        "seed": args.seed,
        "inputs_per_target": args.n,
        "input_timeout_s": args.input_timeout_s,
        "max_input_bytes": MAX_INPUT,
        "method": "seeded mutation of real and built seed files, structure-aware for zip, "
                  "Network manifest and JSON commands; one subprocess per target",
        "cmd_set_scope": "Service._command (size limit, JSON parse, object check, set_point); "
                         "the MQTT receive loop around it is not fuzzed",
        "seconds": round(time.monotonic() - t0, 1),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "targets_run": targets,
        "memory_goal": f"traced peak per input <= {MEMORY_GOAL} x max(input size, "
                       f"{MEMORY_FLOOR_BYTES} bytes)",
    }
    payload = {**results, "_meta": payload}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
