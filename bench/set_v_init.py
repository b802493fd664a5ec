"""Give the committed bench models a new initial membrane (``Network.v_init``) and re-record
their calibration tables, so each file's recommended operating point fits how it now runs.

    python bench/set_v_init.py            # v_init = 0.5 (convert()'s default for frames): MNIST, CIFAR-10

The weights, biases, λs and thresholds stay as converted (λ at the 99.9th percentile);
``v_init`` changes when the network decides, so each calibration table is traced again
with ``spikecast.ext.engine.trace`` on the same held-out data and number of steps it was
first recorded on, and the recommended point is chosen from it
(``spikecast.ext.core.calibration.Calibration.recommend``):

- bench/models/mnist_maxpool.scn: MNIST training images [57000, 58000), 300 steps
  (``holdout=`` of bench/convert_mnist.py);
- bench/models/cifar10.scn: the first 1000 held-out training images of bench/cifar10.py's
  seeded split, 400 steps;
- bench/models/nmnist.scn (only with ``--only nmnist``: convert() keeps v_init = 0 for
  event input, which won on N-MNIST): the 200 real calibration recordings of
  bench/nmnist.py's seeded split (perm[300:500]), 320 steps.

bench/models/mnist_smalllogit.scn (bench/defaults.py's own network, with a fitted
temperature) and the demo's runtime/data/nmnist.scn are left as they are.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from common import DATA, MODELS, load_mnist, require


def retable(path_name: str, inputs: Any, y: np.ndarray, n_steps: int, v_init: float, what: str) -> None:
    from spikecast.ext.core.calibration import META_KEY, Calibration
    from spikecast.ext.core.network import CalibrationTable, Network
    from spikecast.ext.engine import trace

    path = MODELS / path_name
    old = Network.load(path)
    if old.calibration is None or old.calibration.n_steps != n_steps or old.calibration.n_samples != len(y):
        raise SystemExit(f"{path}: its table is not {len(y)} samples x {n_steps} steps")
    # The data are the table's own: the old network on the first 50 samples reproduces it.
    k = 50
    first = inputs[:k]
    same = trace(old, first, n_steps, n_threads=1).correct(y[:k]) == old.calibration.correct[:, :k]
    if same.mean() < 0.999:
        raise SystemExit(f"{path}: these are not the data its table was recorded on ({same.mean():.4f})")
    net = old.with_(v_init=v_init)
    t0 = time.time()
    tr = trace(net, inputs, n_steps, n_threads=1)
    table = CalibrationTable(confidence=tr.confidence, correct=tr.correct(y))
    net = net.with_(calibration=table)
    rec = Calibration(table).recommend()
    meta = {**net.meta, "v_init": v_init, "calibration_table": what, META_KEY: rec.as_dict()}
    net = net.with_(meta=meta)
    net.save(path)
    back = Network.load(path)
    if back.sha256 != net.sha256:
        raise SystemExit(f"{path}: the saved file does not load back identically")
    before = old.meta.get(META_KEY, {})
    after = rec.as_dict()
    print(
        f"{path_name}: v_init {old.v_init} -> {v_init}; table {time.time() - t0:.0f} s; "
        f"recommended {[before.get(k) for k in ('tau', 't_min', 'mean_steps', 'accuracy')]} -> "
        f"{[after.get(k) for k in ('tau', 't_min', 'mean_steps', 'accuracy')]}; sha256 {back.sha256[:16]}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--v-init", type=float, default=0.5)
    ap.add_argument("--only", nargs="+", choices=["mnist", "cifar10", "nmnist"])
    args = ap.parse_args()
    which = args.only or ["mnist", "cifar10"]  # N-MNIST: events keep v_init = 0 (bench/lowlatency.py)
    if "mnist" in which:
        xtr, ytr, _, _ = load_mnist()
        what = "MNIST training images [57000, 58000) (never trained on), 300 steps, engine"
        retable("mnist_maxpool.scn", xtr[57_000:58_000], ytr[57_000:58_000], 300, args.v_init, what)
    if "cifar10" in which:
        import cifar10 as cf
        from spikecast.ext.core.network import Network

        spec = Network.load(MODELS / "cifar10.scn").input
        jpegs = require(DATA / "cifar10" / "cifar10_jpeg.npz", "CIFAR-10 JPEGs")
        with np.load(jpegs, allow_pickle=False) as d:
            buf, off, ytr_c = d["train_jpeg"], d["train_offsets"], d["y_train"].astype(np.int64)
            _, held = cf.split(len(ytr_c), 0)
            pick = held[:1000]
            sub_off = np.concatenate([[0], np.cumsum(off[pick + 1] - off[pick])])
            sub_buf = np.concatenate([buf[off[i] : off[i + 1]] for i in pick])
        x = spec.normalize(cf.decode_jpegs(sub_buf, sub_off, "held-out"))
        retable("cifar10.scn", x, ytr_c[pick], 400, args.v_init,
                "1000 held-out training images, 400 steps, engine")  # fmt: skip
    if "nmnist" in which:
        import nmnist as nm
        from spikecast.ext.engine import EventSteps

        paths, labels = nm.real_recordings()
        hold_i = np.sort(np.random.default_rng(0).permutation(nm.N_REAL)[300:500])
        recs = nm.read_all([paths[i] for i in hold_i])
        shape = (2, nm.SIZE, nm.SIZE)
        steps = [EventSteps.from_arrays(e["x"], e["y"], e["p"], nm.event_steps(e), shape) for e in recs]
        retable("nmnist.scn", steps, labels[hold_i], nm.T_TABLE, args.v_init,
                "200 real N-MNIST recordings")  # fmt: skip


if __name__ == "__main__":
    main()
