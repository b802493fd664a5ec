"""The compiled engine against the dense reference simulator, spike for spike.

The networks (tests/ext/engine_nets.py) use weights and biases that are multiples of 2^-8,
θ = 1 and frames that are small multiples of 2^-8, so every sum is exact in float32:
the engine must then reproduce converters.reference.simulate exactly, step by step
and layer by layer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import engine_nets as nets  # tests/ext is on sys.path (pytest's rootdir-less import mode)
import numpy as np
import pytest
from spikecast.ext import (
    CompiledNetwork,
    Engine,
    EventSteps,
    compile_network,
    run_batch,
)
from spikecast.ext.core.errors import ParameterError, SpikecastError
from spikecast.ext.core.network import InputSpec, Layer, Network

reference = pytest.importorskip("spikecast.converters.reference", reason="the reference needs torch")

T = 24
BUILDERS: list[Callable[..., Network]] = [
    nets.net_frame_pool3,
    nets.net_events_conv_out,
    nets.net_events_linear,
    nets.net_frame_pool_pool,
    nets.net_frame_conv_only,
    nets.net_tied_pool,
    nets.net_frame_linear,
]


def _cases() -> list[tuple[str, Network]]:
    cases = [(b.__name__, b()) for b in BUILDERS]
    # Both reset modes on the richest frame and event networks.
    cases.append(("net_frame_pool3_zero", nets.net_frame_pool3(reset="zero")))
    cases.append(("net_events_conv_out_subtract", nets.net_events_conv_out(reset="subtract")))
    # Widths that are multiples of 16 fill whole AVX-512 vectors (the others end in a masked tail).
    cases.append(("net_wide_frame", nets.net_wide()))
    cases.append(("net_wide_frame_zero", nets.net_wide(reset="zero")))
    cases.append(("net_wide_events_zero", nets.net_wide(reset="zero", kind="events")))
    # Grouped and depthwise convolutions, frames and events, both resets.
    cases.append(("net_grouped_frame", nets.net_grouped()))
    cases.append(("net_grouped_events_zero", nets.net_grouped(reset="zero", kind="events")))
    cases.append(("net_grouped_wide_events", nets.net_grouped_wide()))
    cases.append(("net_grouped_wide_frame", nets.net_grouped_wide(kind="frame")))
    # A DAG: residual adds (identity and projection skips), concatenations, a layer that
    # reads an earlier layer than the previous one.
    cases.append(("net_dag_frame", nets.net_dag()))
    cases.append(("net_dag_events_zero", nets.net_dag(reset="zero", kind="events")))
    # Membranes that start at a fraction of threshold (Network.v_init), both resets,
    # frames and events, pools, grouped convs and a DAG.
    cases.append(("net_frame_pool3_vinit", nets.net_frame_pool3().with_(v_init=0.5)))
    cases.append(("net_events_conv_out_vinit", nets.net_events_conv_out().with_(v_init=0.5)))
    cases.append(("net_wide_events_vinit", nets.net_wide(kind="events").with_(v_init=0.25)))
    cases.append(("net_grouped_frame_vinit", nets.net_grouped().with_(v_init=0.75)))
    cases.append(("net_dag_frame_vinit", nets.net_dag().with_(v_init=0.5)))
    # The evidence rule (Network.evidence_steps): same spikes, c(t) from z·t/t_e.
    cases.append(("net_frame_pool3_evidence", nets.net_frame_pool3().with_(evidence_steps=4.0)))
    cases.append(("net_events_conv_out_evidence", nets.net_events_conv_out().with_(evidence_steps=10.0)))
    # Burst coding (Network.max_spikes): up to B spikes per neuron and step, through
    # convs, linears, gated max-pools and a DAG's extra inputs.
    burst_events = nets.net_events_conv_out(reset="subtract").with_(max_spikes=3)
    cases.append(("net_events_conv_out_burst", burst_events))
    cases.append(("net_frame_pool3_burst", nets.net_frame_pool3().with_(max_spikes=4)))
    cases.append(("net_dag_frame_burst", nets.net_dag().with_(max_spikes=2)))
    cases.append(("net_wide_events_burst", nets.net_wide(kind="events").with_(max_spikes=3, v_init=0.5)))
    # Count max-pool (Network.max_pool = "count"): M(t) - M(t-1) spikes per window, with
    # ties, stacked pools, padding, bursts and a DAG.
    cases.append(("net_frame_pool3_count", nets.net_frame_pool3().with_(max_pool="count")))
    cases.append(("net_frame_pool_pool_count", nets.net_frame_pool_pool().with_(max_pool="count")))
    cases.append(("net_tied_pool_count", nets.net_tied_pool().with_(max_pool="count")))
    burst_count = nets.net_frame_pool3().with_(max_spikes=4, max_pool="count")
    cases.append(("net_frame_pool3_burst_count", burst_count))
    cases.append(("net_dag_frame_count", nets.net_dag().with_(max_pool="count", max_spikes=2)))
    # The membrane read-out (Network.readout): the same spikes, logits from N + V/θ of the
    # output's source, through no pool, one pool, two stacked pools; with v_init, bursts.
    cases.append(("net_frame_pool3_membrane", nets.net_frame_pool3().with_(readout="membrane")))
    cases.append(("net_events_linear_membrane", nets.net_events_linear().with_(readout="membrane")))
    pools = nets.net_frame_pool_pool().with_(readout="membrane", max_pool="count", v_init=0.5)
    cases.append(("net_frame_pool_pool_membrane", pools))
    cases.append(("net_tied_pool_membrane", nets.net_tied_pool().with_(readout="membrane")))
    wide = nets.net_wide(kind="events").with_(readout="membrane", max_spikes=3, v_init=0.25)
    cases.append(("net_wide_events_membrane_burst", wide))
    return cases


CASES = _cases()


def _inputs(net: Network, n: int, seed: int = 0) -> np.ndarray:
    if net.input.kind == "frame":
        return nets.frames(net, n, seed)
    return nets.event_counts(net, T, n, seed=seed)


def _sample(net: Network, x: np.ndarray, b: int) -> np.ndarray | EventSteps:
    return x[b] if net.input.kind == "frame" else EventSteps.from_counts(x[:, b])


@pytest.mark.parametrize(("name", "net"), CASES, ids=[c[0] for c in CASES])
def test_spike_trains_match_reference(name: str, net: Network) -> None:
    n = 3
    x = _inputs(net, n)
    ref = reference.simulate(net, x, T, record_spikes=True)
    assert ref.spikes is not None
    eng = Engine(net)
    spiking = range(len(net.layers) - 1)
    for b in range(n):
        eng.reset()
        inp = _sample(net, x, b)
        if isinstance(inp, EventSteps):
            steps = [inp.steps(t, t + 1) for t in range(T)]
        else:
            eng.set_frame(inp)
        for t in range(T):
            if isinstance(inp, EventSteps):
                assert eng.feed(steps[t]) == 1
            else:
                assert eng.step() == 1
            assert eng.t == t + 1
            for lay in spiking:
                got = eng.layer_spikes(lay)
                want = ref.spikes[lay][t, b].reshape(-1)
                assert np.array_equal(got, want), f"{name}: sample {b} step {t + 1} layer {lay}"
                # The sparse form: the same neurons, as torch-order indices.
                assert np.array_equal(np.bincount(eng.spiked(lay), minlength=len(want)), want)
            np.testing.assert_array_equal(eng.logits, ref.logits[t, b])
            assert eng.confidence == pytest.approx(float(ref.confidence[t, b]), abs=1e-6)
        np.testing.assert_array_equal(eng.synops, ref.synops[b].astype(np.int64))
        want_spikes = [int(ref.spike_counts[lay][b].sum()) for lay in range(len(net.layers))]
        np.testing.assert_array_equal(eng.spikes, want_spikes)
    # The trains are not trivial: every spiking layer spikes somewhere, but not always.
    for lay in spiking:
        assert 0 < (ref.spikes[lay] > 0).mean() < 1, f"{name}: layer {lay} rate {ref.spikes[lay].mean()}"
    if net.max_spikes > 1:  # and a burst network does emit bursts
        assert max(int(ref.spikes[lay].max()) for lay in spiking) > 1, name


@pytest.mark.parametrize(("name", "net"), CASES[:4], ids=[c[0] for c in CASES[:4]])
def test_run_matches_reference(name: str, net: Network) -> None:
    x = _inputs(net, 2, seed=1)
    ref = reference.simulate(net, x, T)
    eng = Engine(compile_network(net))
    for b in range(2):
        res = eng.run(_sample(net, x, b), t_max=T)
        assert res.steps == T
        assert res.exit == "max_steps"
        np.testing.assert_array_equal(res.logits, ref.logits[-1, b])
        assert res.class_index == int(np.argmax(ref.logits[-1, b]))
        assert res.confidence == pytest.approx(float(ref.confidence[-1, b]), abs=1e-6)
        np.testing.assert_array_equal(res.synops, ref.synops[b].astype(np.int64))
        assert res.total_synops == int(ref.synops[b].sum())


def test_frame_input_adds_no_synops_and_events_count_fanout() -> None:
    net = nets.net_frame_pool3()
    res = Engine(net).run(nets.frames(net, 1)[0], t_max=5)
    assert res.synops[0] == 0 and res.synops[2] > 0
    # One event at the corner of a padded 3x3 conv reaches 2x2 outputs x 4 channels.
    ev_net = nets.net_events_conv_out()
    c_out = ev_net.layers[0].out_shape[0]
    fan = reference.fanout(ev_net.layers[0])
    eng = Engine(ev_net)
    eng.feed(EventSteps(np.array([0, 0], np.int32), np.array([0, 2]), ev_net.input.shape))
    assert eng.synops[0] == 2 * fan[0, 0, 0] and fan[0, 0, 0] % c_out == 0


def _first_crossing(conf: np.ndarray, tau: float, t_min: int) -> int | None:
    for t in range(max(t_min, 1), len(conf) + 1):
        if conf[t - 1] >= tau:
            return t
    return None


@pytest.mark.parametrize("t_min", [1, 6, 15])
def test_early_exit_at_reference_crossing(t_min: int) -> None:
    net = nets.net_frame_pool3()
    x = nets.frames(net, 6, seed=2)
    ref = reference.simulate(net, x, T)
    eng = Engine(net)
    checked = 0
    for b in range(len(x)):
        conf = ref.confidence[:, b].astype(np.float64)
        # Taus halfway between distinct confidences, so float rounding cannot flip a test.
        levels = np.unique(conf)
        for tau in (levels[:-1] + levels[1:]) / 2:
            if min(abs(levels - tau)) < 1e-5:
                continue
            want = _first_crossing(conf, float(tau), t_min)
            res = eng.run(x[b], t_max=T, tau=float(tau), t_min=t_min)
            if want is None:
                assert (res.steps, res.exit) == (T, "max_steps")
            else:
                assert (res.steps, res.exit) == (want, "confident")
                np.testing.assert_array_equal(res.logits, ref.logits[want - 1, b])
                checked += 1
    assert checked > 10


def test_early_exit_events_and_end_of_stream() -> None:
    net = nets.net_events_conv_out()
    counts = nets.event_counts(net, T, 1, seed=3)
    ref = reference.simulate(net, counts, T)
    conf = ref.confidence[:, 0].astype(np.float64)
    ev = EventSteps.from_counts(counts[:, 0])
    eng = Engine(net)
    tau = float(np.sort(conf)[len(conf) // 2]) - 1e-6
    want = _first_crossing(conf, tau, 3)
    res = eng.run(ev, t_max=T, tau=tau, t_min=3)
    assert want is not None and (res.steps, res.exit) == (want, "confident")
    # Fewer event steps than t_max: stop at their end.
    res = eng.run(ev.steps(0, 10), t_max=T)
    assert (res.steps, res.exit) == (10, "end_of_stream")
    np.testing.assert_array_equal(res.logits, ref.logits[9, 0])
    res = eng.run(ev, t_max=7)
    assert (res.steps, res.exit) == (7, "max_steps")


def test_streaming_feed_stops_early_and_resumes() -> None:
    net = nets.net_events_conv_out()
    counts = nets.event_counts(net, T, 1, seed=4)
    ref = reference.simulate(net, counts, T)
    ev = EventSteps.from_counts(counts[:, 0])
    eng = Engine(net)
    conf = ref.confidence[:, 0].astype(np.float64)
    tau = float(np.max(conf[:12])) - 1e-6
    want = _first_crossing(conf, tau, 1)
    assert want is not None
    used = eng.feed(ev, tau=tau)
    assert used == want and eng.exit == "confident" and eng.t == want
    # Carry on without reset: same trajectory as the reference.
    assert eng.feed(ev.steps(used, T)) == T - used and eng.exit == "running"
    np.testing.assert_array_equal(eng.logits, ref.logits[-1, 0])
    # Silent steps integrate biases only; t_max caps the stream.
    assert eng.step(5, t_max=T + 2) == 2 and eng.exit == "max_steps" and eng.t == T + 2


def test_event_columns_equal_counts() -> None:
    shape = (2, 5, 7)
    x = np.array([0, 6, 6, 3, 3, 1])
    y = np.array([0, 4, 4, 2, 2, 1])
    p = np.array([1, 0, 0, 1, 1, 0])
    step = np.array([2, 0, 0, 1, 0, 2])  # unsorted; (6,4,0) twice in step 0
    ev = EventSteps.from_arrays(x, y, p, step, shape)
    counts = np.zeros((3, *shape))
    np.add.at(counts, (step, p, y, x), 1)
    dense = EventSteps.from_counts(counts)
    assert ev.n_steps == dense.n_steps == 3
    for t in range(3):
        a = np.sort(ev.steps(t, t + 1).indices)
        b = np.sort(dense.steps(t, t + 1).indices)
        np.testing.assert_array_equal(a, b)
    merged = EventSteps.from_arrays(x, y, p, step, (1, 5, 7), n_steps=4)
    assert merged.n_steps == 4 and int(merged.indices.max()) < 35


def test_batch_equals_single_runs() -> None:
    net = nets.net_frame_pool3()
    plan = CompiledNetwork(net)
    x = nets.frames(net, 21, seed=5)
    ref = reference.simulate(net, x, T)
    tau = float(np.median(ref.confidence[-1]))
    for n_threads in (1, 3):
        batch = run_batch(plan, x, T, tau=tau, t_min=2, n_threads=n_threads, chunk_size=4)
        assert len(batch) == len(x)
        eng = Engine(plan)
        for i in range(len(x)):
            r = eng.run(x[i], T, tau=tau, t_min=2)
            assert batch.class_index[i] == r.class_index
            assert batch.confidence[i] == r.confidence
            assert batch.steps[i] == r.steps and batch.exit[i] == r.exit
            np.testing.assert_array_equal(batch.synops[i], r.synops)
            np.testing.assert_array_equal(batch.spikes[i], r.spikes)
            np.testing.assert_array_equal(batch.logits[i], r.logits)
    assert set(batch.exit) <= {"confident", "max_steps"}
    assert "confident" in set(batch.exit)


def test_engines_sharing_a_plan_do_not_interfere() -> None:
    net = nets.net_frame_pool3()
    plan = CompiledNetwork(net)
    x = nets.frames(net, 8, seed=6)
    solo = [Engine(plan).run(x[i], T) for i in range(len(x))]
    # Interleaved steps of two engines on one plan.
    e1, e2 = Engine(plan), Engine(plan)
    e1.set_frame(x[0])
    e2.set_frame(x[1])
    for _ in range(T):
        e1.step()
        e2.step()
    np.testing.assert_array_equal(e1.logits, solo[0].logits)
    np.testing.assert_array_equal(e2.logits, solo[1].logits)
    # Two threads, each with its own engine, many runs at once.
    out: dict[int, list[np.ndarray]] = {}

    def work(k: int) -> None:
        eng = Engine(plan)
        out[k] = [eng.run(x[i], T).logits for i in range(len(x)) for _ in range(3)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for k in range(2):
        for j, logits in enumerate(out[k]):
            np.testing.assert_array_equal(logits, solo[j // 3].logits)


def test_one_engine_in_two_threads_raises_not_crashes() -> None:
    net = nets.net_frame_pool3()
    eng = Engine(net)
    frame = nets.frames(net, 1)[0]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(30):
                eng.run(frame, 200)
        except SpikecastError as e:
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # Either it raised cleanly or the runs happened not to overlap; state stays usable.
    assert all("another thread" in str(e) for e in errors)
    assert eng.run(frame, T).steps == T


# -- bad arguments --------------------------------------------------------------------


def test_bad_arguments_raise_parameter_error() -> None:
    net = nets.net_frame_pool3()
    eng = Engine(net)
    good = nets.frames(net, 1)[0]
    bad_frames = [
        good[:1],
        good.astype(np.float64)[None],
        np.full_like(good, np.nan),
        np.where(np.arange(good.size).reshape(good.shape) == 5, np.inf, good),
        np.full(good.shape, 1e39),
        np.array(["a"] * good.size).reshape(good.shape),
    ]
    for f in bad_frames:
        with pytest.raises(ParameterError):
            eng.run(f, 10)
    for kwargs in ({"t_max": 0}, {"t_max": -3}, {"t_max": 2.5}, {"t_max": True}):
        with pytest.raises(ParameterError):
            eng.run(good, **kwargs)  # type: ignore[arg-type]
    for tau in (-0.1, 1.5, float("nan"), "0.5"):
        with pytest.raises(ParameterError):
            eng.run(good, 10, tau=tau)  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        eng.run(good, 10, t_min=-1)
    eng.reset()  # clears the frame current too
    with pytest.raises(ParameterError):
        eng.step()
    with pytest.raises(ParameterError):
        eng.feed(EventSteps(np.zeros(0, np.int32), np.zeros(1, np.int64), net.input.shape))
    with pytest.raises(ParameterError):
        eng.layer_spikes(len(net.layers) - 1)
    with pytest.raises(ParameterError):
        eng.layer_spikes(99)
    for bad in (len(net.layers) - 1, 99):
        with pytest.raises(ParameterError):
            eng.spiked(bad)
    with pytest.raises(ParameterError):
        run_batch(net, good, 10)  # not a batch
    with pytest.raises(ParameterError):
        run_batch(net, good[None], 10, n_threads=0)
    with pytest.raises(ParameterError):
        Engine("not a network")  # type: ignore[arg-type]


def test_bad_events_raise_parameter_error() -> None:
    net = nets.net_events_conv_out()
    shape = net.input.shape
    n_in = int(np.prod(shape))
    eng = Engine(net)
    bad_csr = [
        (np.array([0, n_in]), np.array([0, 2])),  # index out of range
        (np.array([-1]), np.array([0, 1])),
        (np.array([0, 1]), np.array([0, 3])),  # offsets end past the events
        (np.array([0, 1]), np.array([1, 2])),  # offsets start past 0
        (np.array([0, 1]), np.array([0, 2, 1, 2])),  # decreasing
        (np.array([0.5]), np.array([0, 1])),  # float indices
        (np.array([[0]]), np.array([0, 1])),
        (np.array([0]), np.array([], np.int64)),
    ]
    for idx, off in bad_csr:
        with pytest.raises(ParameterError):
            EventSteps(idx, off, shape)
    ok = EventSteps(np.array([1, 2]), np.array([0, 2]), shape)
    with pytest.raises(ParameterError):
        eng.feed(EventSteps(np.array([1]), np.array([0, 1]), (2, 9, 11)))  # other shape
    # Mutated after validation: caught again before the compiled code runs.
    ok.indices[0] = n_in + 5
    with pytest.raises(ParameterError):
        eng.feed(ok)
    with pytest.raises(ParameterError):
        eng.run(np.zeros(shape, np.float32), 5)  # frames into an event network
    with pytest.raises(ParameterError):
        eng.feed(ok.indices)  # type: ignore[arg-type]
    cols = dict(x=[0, 12], y=[0, 0], p=[0, 1], step=[0, 1])
    with pytest.raises(ParameterError):
        EventSteps.from_arrays(shape=shape, **cols)  # x == W
    with pytest.raises(ParameterError):
        EventSteps.from_arrays([0], [0], [2], [0], shape)  # polarity 2
    with pytest.raises(ParameterError):
        EventSteps.from_arrays([0], [0], [0], [-1], shape)
    with pytest.raises(ParameterError):
        EventSteps.from_arrays([0, 1], [0], [0], [0], shape)
    with pytest.raises(ParameterError):
        EventSteps.from_counts(-np.ones((2, *shape)))
    with pytest.raises(ParameterError):
        ok.steps(0, 5)


def test_padded_pool_matches_reference_and_bad_networks_raise() -> None:
    rng = np.random.default_rng(0)
    l0 = nets.conv(rng, "c", (1, 6, 6), 2, (3, 3), padding=(1, 1))
    padded_pool = Layer("maxpool", "p", (2, 6, 6), (2, 4, 4), kernel=(2, 2), stride=(2, 2), padding=(1, 1))
    out = nets.linear(rng, "out", (2, 4, 4), 2, spiking=False)
    net = Network(InputSpec("frame", (1, 6, 6)), (l0, padded_pool, out), nets.names(2))
    x = nets.frames(net, 1)
    for mode in ("gated", "count"):
        net = net.with_(max_pool=mode)
        res = Engine(CompiledNetwork(net)).run(x[0], t_max=T)
        np.testing.assert_array_equal(res.logits, reference.simulate(net, x, T).logits[-1, 0])
    with pytest.raises(ParameterError):
        CompiledNetwork(object())  # type: ignore[arg-type]


def test_poisson_frames_fed_as_events_match_reference() -> None:
    """Poisson-coded frames: the caller draws S_0(t) (as the reference does) and feeds the
    spikes as events; with non-negative frames the spikes are 0/1 and the runs agree."""
    net = nets.net_frame_pool3().with_(input=InputSpec("frame", (2, 11, 13), encoding="poisson"))
    x = nets.frames(net, 1, seed=7) * 4  # rates up to ~0.75
    ref = reference.simulate(net, x, T, record_spikes=True, rng=np.random.default_rng(3))
    assert ref.spikes is not None
    rng = np.random.default_rng(3)
    counts = np.stack(
        [(rng.random(x.shape, dtype=np.float32) < np.abs(x)).astype(np.float32)[0] for _ in range(T)]
    )
    eng = Engine(net)
    with pytest.raises(ParameterError):
        eng.set_frame(x[0])  # analog current does not apply to a Poisson network
    res = eng.run(EventSteps.from_counts(counts), t_max=T)
    assert (res.steps, res.exit) == (T, "max_steps")
    np.testing.assert_array_equal(res.logits, ref.logits[-1, 0])
    np.testing.assert_array_equal(res.synops, ref.synops[0].astype(np.int64))
    for lay in range(len(net.layers) - 1):
        np.testing.assert_array_equal(eng.layer_spikes(lay), ref.spikes[lay][-1, 0].reshape(-1))
