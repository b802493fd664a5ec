"""EventStreamDecider: step completion by watermark, policies (reset, window, decay)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import numpy as np
import pytest
from service_kit import polarity_net, split_steps, uniform_events
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.engine import CompiledNetwork, Engine, EventSteps
from spikecast.runtime.decision import OperatingPoint
from spikecast.runtime.payload import Decision
from spikecast.runtime.stream import DecisionContext, EventStreamDecider

DT = 1000
NET = polarity_net(lam=3.0, calibration=False)
PLAN = CompiledNetwork(NET)
CTX = DecisionContext(NET, "cam0", None, NET.sha256)


def make(
    tau: float = 0.9, t_max: int = 200, **kwargs: object
) -> tuple[EventStreamDecider, Callable[[OperatingPoint], None]]:
    """A decider whose operating point can be changed through the returned setter."""
    box = [OperatingPoint(tau=tau, t_min=1, t_max=t_max)]

    def set_point(p: OperatingPoint) -> None:
        box[0] = p

    return EventStreamDecider(PLAN, CTX, "s0", lambda: box[0], **kwargs), set_point  # type: ignore[arg-type]


def live(d: EventStreamDecider, events: np.ndarray, t0_us: int, n_steps: int) -> list[Decision]:
    """Push one packet per step (t0_us on the step grid), then an empty watermark packet."""
    out: list[Decision] = []
    for k, part in enumerate(split_steps(events, t0_us, DT, n_steps)):
        out += d.push(part, t0_us + k * DT)
    out += d.push(events[:0], t0_us + n_steps * DT)
    return out


def call_with_timeout(fn: Callable[[], list[Decision]], timeout_s: float = 10.0) -> list[Decision]:
    """Run fn in a thread: a decider stuck in a loop fails the test instead of hanging it."""
    result: list[list[Decision]] = []
    worker = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    worker.start()
    worker.join(timeout_s)
    assert not worker.is_alive(), f"decider did not return within {timeout_s} s"
    return result[0]


def test_reset_policy_decisions_tile_the_stream() -> None:
    d, _ = make(tau=0.9)
    ev = uniform_events(60, 20, t0_us=5_000_000)
    out = live(d, ev, 5_000_000, 60) + d.finish()
    assert len(out) >= 4
    assert [x.seq for x in out] == list(range(len(out)))
    # Consecutive spans of whole steps on the packets' grid, from the first packet's t0.
    assert out[0].sensor_t0_us == 5_000_000
    for a, b in itertools.pairwise(out):
        assert b.sensor_t0_us == a.sensor_t1_us
    for x in out:
        assert x.steps * DT == x.sensor_t1_us - x.sensor_t0_us
        assert x.label == "on" and x.synops > 0
    assert out[-1].sensor_t1_us == 5_000_000 + 60 * DT
    assert {x.exit for x in out[:-1]} == {"confident"}
    assert out[-1].exit in ("confident", "end_of_stream")
    assert sum(x.steps for x in out) == 60


def test_step_completes_only_when_the_watermark_passes_its_end() -> None:
    d, _ = make(tau=0.0)  # decides at every step it can complete
    ev = uniform_events(3, 20, t0_us=0)
    parts = split_steps(ev, 0, DT, 3)
    assert d.push(parts[0], 0) == [] and d.done == 0  # step 0 may still get events
    out = d.push(parts[1], 1000)  # the packet of step 1 shows that step 0 is over
    assert d.done == 1 and [(x.sensor_t0_us, x.sensor_t1_us) for x in out] == [(0, 1000)]
    assert d.push(ev[:0], 1999) == [] and d.done == 1  # an empty packet's t0 is a watermark
    out = d.push(ev[:0], 2000)
    assert d.done == 2 and [(x.sensor_t0_us, x.steps) for x in out] == [(1000, 1)]


def test_origin_is_on_the_first_packets_step_grid() -> None:
    d, _ = make(tau=0.0)
    ev = uniform_events(2, 5, t0_us=7_000_000, seed=3)
    ev["t"][0] = 7_000_437  # the first event comes late in its step
    ev.sort(order="t")
    out = live(d, ev, 7_000_000, 2)
    assert d.origin_us == 7_000_000
    assert [(x.sensor_t0_us, x.sensor_t1_us) for x in out] == [
        (7_000_000, 7_001_000),
        (7_001_000, 7_002_000),
    ]


def test_file_chunks_start_at_the_first_event() -> None:
    d, _ = make(tau=0.0)
    ev = uniform_events(3, 5, t0_us=437, seed=4)
    d.push(ev, watermark_us=int(ev["t"][-1]) + 1)  # a replayed chunk: watermark after its events
    assert d.origin_us == int(ev["t"][0])


def test_window_policy_decides_once_per_window_from_its_start() -> None:
    d, _ = make(tau=0.9, policy="window", window_ms=20)
    ev = uniform_events(100, 20, t0_us=0)
    out = live(d, ev, 0, 100) + d.finish()
    assert [x.sensor_t0_us for x in out] == [k * 20_000 for k in range(5)]
    assert all(x.exit == "confident" and x.steps < 20 for x in out)


def test_window_policy_deciding_on_the_last_step_moves_on() -> None:
    # tau = 1 is never reached: every window ends with max_steps on its last step. This
    # used to loop forever (the finished window was never left).
    d, _ = make(tau=1.0, policy="window", window_ms=10)
    ev = uniform_events(40, 20, t0_us=0)
    out = call_with_timeout(lambda: live(d, ev, 0, 40) + d.finish())
    assert [(x.sensor_t0_us, x.steps, x.exit) for x in out] == [
        (k * 10_000, 10, "max_steps") for k in range(4)
    ]


def test_window_finish_in_the_skipped_rest_adds_no_decision() -> None:
    d, _ = make(tau=0.9, policy="window", window_ms=50)
    ev = uniform_events(30, 20, t0_us=0)
    out = live(d, ev, 0, 30)
    assert len(out) == 1 and out[0].steps < 30  # decided; the rest of the window is skipped
    assert d.finish() == []  # ends inside the skipped rest: nothing new to say


def test_t_max_forces_a_decision() -> None:
    d, _ = make(tau=1.0, t_max=7)
    out = live(d, uniform_events(21, 20), 0, 21)
    assert [(x.steps, x.exit) for x in out] == [(7, "max_steps")] * 3


def test_operating_point_is_read_live() -> None:
    d, set_point = make(tau=0.99)
    ev = uniform_events(200, 20, t0_us=0)
    first = live(d, ev[ev["t"] < 100_000], 0, 100)
    set_point(OperatingPoint(tau=0.3, t_min=1, t_max=200))
    rest = split_steps(ev, 100_000, DT, 100)
    second: list[Decision] = []
    for k, part in enumerate(rest):
        second += d.push(part, 100_000 + k * DT)
    assert first and second
    slow = np.mean([x.steps for x in first if x.exit == "confident"])
    fast = np.mean([x.steps for x in second[1:]])  # [0] began under the old tau
    assert fast < slow / 2


def test_late_and_outside_events_are_dropped_and_counted() -> None:
    d, _ = make(tau=0.9)
    ev = uniform_events(10, 20, t0_us=0)
    live(d, ev, 0, 10)
    assert d.done == 10 and d.dropped_events == 0
    late = ev[(ev["t"] >= 2000) & (ev["t"] < 3000)]  # step 2 is complete already
    d.push(late)
    assert d.dropped_events == len(late)
    outside = uniform_events(1, 4, t0_us=10_000)
    outside["x"] = 40  # beyond the 34-pixel input
    d.push(outside)
    assert d.dropped_events == len(late) + 4


def test_one_decision_stream_finishes_after_its_decision() -> None:
    d, _ = make(tau=0.9, one_decision=True)
    out = live(d, uniform_events(60, 20), 0, 60)
    assert len(out) == 1 and d.finished
    assert d.finish() == []


def test_policy_is_checked() -> None:
    with pytest.raises(ParameterError, match="policy"):
        make(policy="sometimes")


def test_decay_policy_keeps_deciding() -> None:
    d, _ = make(tau=0.9, policy="decay", decay=0.5)
    out = live(d, uniform_events(60, 20), 0, 60)
    assert len(out) >= 2 and [x.seq for x in out] == list(range(len(out)))


def test_engine_decay_scales_the_evidence_and_keeps_hidden_state() -> None:
    """After decay(a), z = λ V_L / t_eff with both scaled: the logits are unchanged at once,
    and the next step weighs the old span a times less than a fresh start would."""
    ev = uniform_events(30, 20)
    steps = EventSteps.from_arrays(ev["x"], ev["y"], ev["p"], (ev["t"] // DT), NET.input.shape, 30)
    a = Engine(PLAN)
    a.feed(steps.steps(0, 20))
    before = a.logits.copy()
    a.decay(0.5)
    assert a.t == 0 and int(a.synops.sum()) == 0
    a.feed(steps.steps(20, 21))
    # one more step on the undecayed engine, for comparison
    b = Engine(PLAN)
    b.feed(steps.steps(0, 21))
    # Hidden layers are untouched, so step 21 adds the same output drive in both engines:
    # λ·ΔV = 21·z_b(21) − 20·z(20); with decay z_a = (0.5·20·z(20) + λ·ΔV) / (0.5·20 + 1).
    drive = b.logits * 21 - before * 20
    expected = (0.5 * 20 * before + drive) / (0.5 * 20 + 1)
    np.testing.assert_allclose(a.logits, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(a.logits, b.logits)  # the old span now counts half
    with pytest.raises(ParameterError, match="decay factor"):
        a.decay(1.0)


def test_a_long_silence_is_jumped_over_not_stepped_through() -> None:
    """A clock jump of 1000 s must not cost a million empty steps and t_max decisions."""
    d, _ = make(tau=1.0, t_max=50)
    first = uniform_events(20, 20, t0_us=0)
    later = uniform_events(20, 20, t0_us=1_000_000_000)
    out = call_with_timeout(lambda: d.push(first) + d.push(later) + d.finish(), timeout_s=5.0)
    assert len(out) == 2  # the segment before the gap (the rule runs it to t_max), and the one after
    assert out[0].exit == "max_steps" and out[0].steps == 50
    assert out[1].sensor_t0_us >= 1_000_000_000 and out[1].steps == 20


def test_a_far_future_watermark_costs_no_memory_or_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Arrays handed to the engine are bounded by t_max, whatever span a watermark covers.
    sizes: list[int] = []
    feed = Engine.feed_csr

    def spy(self: Engine, idx: np.ndarray, off: np.ndarray, **kw: object) -> int:
        sizes.append(len(off))
        return feed(self, idx, off, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Engine, "feed_csr", spy)
    d, _ = make(tau=0.9, t_max=200)
    ev = uniform_events(5, 20)
    out = live(d, ev, 0, 5)
    far = 2**52  # the watermark 4.5e12 steps on (sensor times are exact below 2**53)
    out += call_with_timeout(lambda: d.push(uniform_events(3, 20, t0_us=far - 5 * DT), far), 2)
    # The decision in progress ran on through at most t_max silent steps, then the
    # silence was jumped.
    assert out[-1].sensor_t0_us == 0 and out[-1].sensor_t1_us <= 200 * DT
    assert out[-1].exit in ("confident", "max_steps")
    tail = d.finish()
    assert tail and abs(tail[0].sensor_t0_us - (far - 5 * DT)) < DT  # and went on from there
    assert max(sizes) <= 201


def test_a_long_sparse_packet_is_linear_not_quadratic(monkeypatch: pytest.MonkeyPatch) -> None:
    # 400k steps with an event every 150 steps: each decision feeds at most t_max steps.
    sizes: list[int] = []
    feed = Engine.feed_csr

    def spy(self: Engine, idx: np.ndarray, off: np.ndarray, **kw: object) -> int:
        sizes.append(len(off))
        return feed(self, idx, off, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Engine, "feed_csr", spy)
    d, _ = make(tau=0.9, t_max=200)
    ev = uniform_events(2_600, 1, dt_us=150_000)
    out = call_with_timeout(lambda: d.push(ev, 0) + d.finish(), 20)
    assert max(sizes) <= 201 and sum(sizes) < 2 * 400_000
    assert sum(x.steps for x in out) <= 390_000 and len(out) <= 390_000 // 150 + 2


def test_a_time_jump_starts_a_fresh_segment() -> None:
    d, _ = make(tau=0.9, max_jump_us=60_000_000)
    ev = uniform_events(40, 20)
    out = live(d, ev, 0, 40)
    n = len(out)
    ahead = 3_600_000_000  # an hour on: the segment restarts there
    out += live(d, uniform_events(40, 20, t0_us=ahead), ahead, 40)
    out += live(d, uniform_events(40, 20, t0_us=50_000), 50_000, 40)  # and back again
    assert d.restarts == 2 and d.dropped_events == 0
    assert [x.seq for x in out] == list(range(len(out)))
    assert all(x.sensor_t1_us <= 40_000 for x in out[:n])
    assert all(x.sensor_t1_us <= 40_000 or x.sensor_t0_us >= 50_000 for x in out)  # no straddling
    assert any(x.sensor_t0_us >= ahead for x in out) and out[-1].sensor_t0_us < ahead


@pytest.mark.parametrize("chunk_us", [1_000, 7_000, 10_000])
def test_a_replayed_file_counts_no_empty_steps_after_its_last_event(chunk_us: int) -> None:
    # 23 steps of events and a rule that never exits early: the end-of-stream decision
    # covers exactly those 23 steps, not the rest of the replay's last chunk.
    from spikecast.runtime.stream import decide_recording

    ev = uniform_events(23, 5, t0_us=2_000_000)
    d, _ = make(tau=1.0, t_max=1000, one_decision=True)
    out = decide_recording(d, ev, chunk_us=chunk_us)
    assert len(out) == 1 and out[0].exit == "end_of_stream"
    origin = out[0].sensor_t0_us  # the first event
    assert origin == int(ev["t"][0])
    last_step = (int(ev["t"][-1]) - origin) // DT
    assert out[0].steps == last_step + 1
    assert out[0].sensor_t1_us == origin + (last_step + 1) * DT


def test_a_packet_with_an_end_completes_its_own_steps() -> None:
    # A packet that carries its end (t1_us) completes every step before it: the decision
    # comes with that packet, not with the next one or a separate watermark.
    ev = uniform_events(10, 5, t0_us=3_000_000, seed=4)
    d, _ = make(tau=0.0)
    plain, _ = make(tau=0.0)
    out = d.push(ev, 3_000_000, end_us=3_010_000)
    assert d.done == 10 and len(out) == 10 and out[-1].sensor_t1_us == 3_010_000
    assert len(plain.push(ev, 3_000_000)) == 9 and plain.done == 9  # the last step waits
    # An empty packet with an end moves the watermark on through a silence; between
    # decisions nothing is decided on silence alone: the silent steps run when input
    # follows (within t_max), and decide then.
    out = d.push(ev[:0], 3_010_000, end_us=3_012_000)
    assert out == [] and d.done == 10
    after = uniform_events(1, 5, t0_us=3_012_000, seed=5)
    out = d.push(after, 3_012_000, end_us=3_013_000)
    assert d.done == 13 and [x.sensor_t1_us for x in out] == [3_011_000, 3_012_000, 3_013_000]


@pytest.mark.parametrize("policy", ["reset", "window", "decay"])
def test_decisions_do_not_depend_on_how_the_stream_is_cut(policy: str) -> None:
    # Bursts of input between silences shorter and longer than t_max, pushed as one
    # packet per step, as 7-step packets, and as one packet: the same decisions.
    rng = np.random.default_rng(3)
    parts, t0 = [], 0
    for gap_steps in (0, 30, 150, 2_000, 40, 5):
        t0 += gap_steps * DT
        burst = int(rng.integers(3, 60))
        parts.append(uniform_events(burst, 4, t0_us=t0, seed=int(rng.integers(1 << 30))))
        t0 += burst * DT
    ev = np.concatenate(parts)
    end_us = int(ev["t"][-1]) + 1

    def decide(packet_steps: int | None) -> list[tuple[int, int, int, str, int]]:
        d, _ = make(tau=0.8, t_max=100, policy=policy, window_ms=50.0)
        out: list[Decision] = []
        if packet_steps is None:
            out += d.push(ev, 0, end_us=end_us)
        else:
            t = ev["t"]
            for a in range(0, end_us, packet_steps * DT):
                b = min(a + packet_steps * DT, end_us)
                part = ev[np.searchsorted(t, a):np.searchsorted(t, b)]
                out += d.push(part, a, end_us=b)
        out += d.finish(end_us)
        return [(x.sensor_t0_us, x.sensor_t1_us, x.steps, x.exit, x.class_index) for x in out]

    whole = decide(None)
    assert len(whole) > 3
    assert decide(1) == whole
    assert decide(7) == whole


def test_the_deciders_unchecked_decisions_hold_to_the_schema() -> None:
    """DecisionContext builds decisions with check=False (their fields are typed engine
    results): every exit it makes, with and without expected accuracy, must still be
    a valid v1 payload, equal to the same decision built with the schema check."""
    from spikecast.runtime.decision import Calibration
    from spikecast.runtime.payload import validate_decision_payload

    net = polarity_net(lam=3.0, calibration=True)
    plan = CompiledNetwork(net)
    for ctx in (CTX, DecisionContext(net, "cam0", Calibration(net.calibration), net.sha256)):
        made: list[Decision] = []
        points = (OperatingPoint(tau=0.9, t_min=1, t_max=200), OperatingPoint(tau=0.9999, t_min=1, t_max=7))
        for point in points:
            d = EventStreamDecider(plan if ctx is not CTX else PLAN, ctx, "s0", lambda p=point: p)
            ev = uniform_events(40, 20, t0_us=1_000)
            made += live(d, ev, 1_000, 40) + d.finish(1_000 + 45 * DT)
        assert {x.exit for x in made} >= {"confident", "max_steps"}
        for x in made:
            validate_decision_payload(x.to_dict())
            assert Decision.from_dict(x.to_dict()) == x
