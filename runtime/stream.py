"""Deciders: drive one engine over one stream and turn its state into decisions.

These classes are synchronous and hold no locks: the service runs each stream's
work in a worker thread (the engine releases the GIL) and keeps a stream on one
thread at a time.

Continuous event streams have no sample boundaries. Sensor time is cut into steps
of ``dt_us`` from the first event, on the step grid of its live packet's ``t0_us``
when there is one. A step is complete once the stream's watermark
(the newest event time seen, or an empty packet's ``t0_us``) has passed its end.
After a decision the policy says what comes next:

- ``reset``: clear the state; the next decision starts at the next step;
- ``window``: decisions cover fixed windows of ``window_ms``; after a decision the
  rest of the window is skipped and the state is cleared at the window's end;
- ``decay``: scale the output integrator and its time divisor by ``decay``, so
  older evidence fades exponentially while the hidden layers stay warm.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from spikecast.ext.core import exits
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.core.network import Network
from spikecast.ext.engine import CompiledNetwork, Engine, RunResult
from spikecast.runtime.decision import Calibration, OperatingPoint
from spikecast.runtime.encode import SpatialMap, encode_events
from spikecast.runtime.payload import Decision, TopK

_NEVER = np.iinfo(np.int64).max
_NO_EVENTS = np.zeros(0, np.int32)


@dataclass(frozen=True)
class DecisionContext:
    """What every decision of a service shares."""

    network: Network
    device: str
    calibration: Calibration | None
    sha256: str
    topk: int = 3

    def decision(
        self, stream: str, seq: int, res: RunResult, t0_us: int, t1_us: int, latency_ms: float
    ) -> Decision:
        p = self.network.probabilities(res.logits, res.t_eff).tolist()
        order = sorted(range(len(p)), key=lambda k: -p[k])[: self.topk]  # stable: ties by class
        names = self.network.class_names
        expected = (
            self.calibration.expected_accuracy(res.steps, res.confidence)
            if self.calibration is not None
            else None
        )
        return Decision(
            device=self.device,
            stream=stream,
            seq=seq,
            label=names[res.class_index],
            class_index=int(res.class_index),
            confidence=float(res.confidence),
            expected_accuracy=expected,
            topk=tuple(TopK(names[int(i)], int(i), float(p[i])) for i in order),
            steps=int(res.steps),
            exit=res.exit if res.exit != exits.RUNNING else exits.END_OF_STREAM,
            sensor_t0_us=int(t0_us),
            sensor_t1_us=int(t1_us),
            latency_ms=float(latency_ms),
            synops=int(res.synops.sum()),
            model_sha256=self.sha256,
            check=False,  # typed engine results; the tests hold this output to the schema
        )


class EventStreamDecider:
    """One continuous event stream over one engine."""

    def __init__(  # noqa: PLR0913  (keyword-only stream options, each with a default)
        self,
        plan: CompiledNetwork,
        ctx: DecisionContext,
        stream: str,
        point: Callable[[], OperatingPoint],
        *,
        policy: str = "reset",
        window_ms: float = 300.0,
        decay: float = 0.5,
        one_decision: bool = False,
        mapping: SpatialMap | None = None,
        clock: Callable[[], float] = time.perf_counter,
        max_jump_us: int | None = None,
        seq_clock: Callable[[], int] | None = None,
        engine: Engine | None = None,
    ) -> None:
        if policy not in ("reset", "window", "decay"):
            raise ParameterError(f"policy must be reset, window or decay, not {policy!r}")
        self.ctx = ctx
        self.stream = stream
        # A finished stream's engine can be handed on (reset here): allocating the state of
        # every layer per file costs more than clearing it.
        if engine is not None and engine.plan is not plan:
            raise ParameterError("a reused engine must run the same compiled network")
        if engine is not None:
            engine.reset()
        self.engine = engine if engine is not None else Engine(plan)
        self.spec = ctx.network.input
        self._point = point
        self.policy = policy
        self.window_steps = max(1, round(window_ms * 1000 / self.spec.dt_us))
        self.decay = decay
        self.one_decision = one_decision
        self.mapping = mapping
        self.clock = clock
        self.max_jump_us = max_jump_us
        self.restarts = 0  # fresh segments started by a time jump
        self.mark_us = 0  # the newest watermark or event time seen
        self.origin_us: int | None = None
        self.done = 0  # steps completed since the origin
        self.seg_start = 0  # step where the current decision began
        self.skip_until = 0  # steps before this are read but not fed
        # In a silence longer than t_max with no decision in progress: its steps are not
        # run, and the next segment starts at the next input's step.
        self.silent = False
        self.seq = 0
        # With a clock (a worker of several, docs/mqtt.md "Scaling out"), seq is
        # max(previous + 1, clock()): unique and increasing per stream across owners.
        self.seq_clock = seq_clock
        self.dropped_events = 0  # every event not fed: outside the input, late, or before the origin
        self.dropped_outside = 0  # of those: outside the input after the mapping
        self._idx = np.zeros(0, np.int32)
        self._step = np.zeros(0, np.int64)

    @property
    def finished(self) -> bool:
        """True once a one-decision stream has decided."""
        return self.skip_until == _NEVER

    def push(
        self, events: np.ndarray, watermark_us: int | None = None, arrival_s: float | None = None,
        end_us: int | None = None,
    ) -> list[Decision]:
        """Add sorted EVENT_DTYPE events; decide on every step the watermark completes.

        ``watermark_us`` is the packet's ``t0_us`` (it also sets the step grid of a new
        stream); ``end_us``, the packet's end if it has one (``t1_us``), moves the
        watermark on to there."""
        arrival = self.clock() if arrival_s is None else arrival_s
        out = self._restart(events, watermark_us, arrival)
        if self.origin_us is None:
            if len(events) == 0 and watermark_us is None:
                return out
            self.origin_us = self._origin(events, watermark_us)
            self.mark_us = self.origin_us
        if len(events):
            enc = encode_events(events, self.spec, self.origin_us, self.mapping)
            self.dropped_events += enc.dropped
            self.dropped_outside += enc.outside
            self._append(enc.indices, enc.steps, enc.in_order)
        newest = int(events["t"][-1]) if len(events) else self.origin_us
        mark = max(newest, watermark_us if watermark_us is not None else newest,
                   end_us if end_us is not None else newest)
        self.mark_us = max(self.mark_us, mark)
        upto = (mark - self.origin_us) // self.spec.dt_us
        return out + self._advance(upto, arrival)

    def jumped(self, events: np.ndarray, watermark_us: int | None) -> bool:
        """True if this input is more than ``max_jump_us`` ahead of or behind the stream."""
        if self.max_jump_us is None or self.origin_us is None or self.finished:
            return False
        t = watermark_us if watermark_us is not None else (
            int(events["t"][0]) if len(events) else None)
        return t is not None and abs(t - self.mark_us) > self.max_jump_us

    def _restart(self, events: np.ndarray, watermark_us: int | None, arrival: float) -> list[Decision]:
        """After a time jump: decide on what the segment holds, then start afresh
        (the next input sets a new origin); ``seq`` goes on."""
        if not self.jumped(events, watermark_us):
            return []
        out = self.finish(arrival_s=arrival)
        self.restarts += 1
        self.engine.reset()
        self.origin_us = None
        self.done = self.seg_start = self.skip_until = 0
        self.silent = False
        self._idx, self._step = self._idx[:0], self._step[:0]
        return out

    def finish(self, end_us: int | None = None, arrival_s: float | None = None) -> list[Decision]:
        """End of stream: complete every pending step; an undecided segment decides now."""
        arrival = self.clock() if arrival_s is None else arrival_s
        if self.origin_us is None:
            return []
        last = int(self._step[-1]) + 1 if len(self._step) else self.done
        if end_us is not None:
            last = max(last, -(-(end_us - self.origin_us) // self.spec.dt_us))
        out = self._advance(last, arrival)
        # Not inside the skipped rest of a window that has decided already.
        if self.engine.t > 0 and self.done >= self.skip_until and self.done > self.seg_start:
            res = self.engine.result()
            out.append(self._emit(res, arrival, exit_override=True))
        return out

    def _origin(self, events: np.ndarray, watermark_us: int | None) -> int:
        """Step 0 starts at the first event, on the step grid of the packet that brought
        it (a live packet's ``t0_us`` <= its first event), so that a sender that cuts
        packets at step boundaries completes a step with the packet that ends it."""
        if not len(events):
            return int(watermark_us or 0)
        first = int(events["t"][0])
        if watermark_us is not None and watermark_us <= first:
            return first - (first - int(watermark_us)) % self.spec.dt_us
        return first

    def _advance(self, upto: int, arrival: float) -> list[Decision]:
        out: list[Decision] = []
        while self.done < upto:
            if self.done < self.skip_until:
                if self.skip_until == _NEVER:
                    self.done = upto
                    break
                self.done = min(self.skip_until, upto)
                if self.done == self.skip_until:
                    self.engine.reset()
                    self.seg_start = self.done
                continue
            point = self._point()
            if self.engine.t == 0 and self._idle(upto, point.t_max):
                break
            t_max = point.t_max
            stop = upto
            if self.policy == "window":
                t_max = min(t_max, self.window_steps)
                stop = min(upto, self.seg_start + self.window_steps)
            # Never more steps than the decision may still take: the arrays _take makes
            # are bounded by t_max, whatever span the watermark covers.
            stop = min(stop, self.done + max(1, t_max - self.engine.t))
            idx, off = self._take(self.done, stop)
            # The arrays are this decider's own (int32 indices inside the input, int64
            # offsets): the engine's checks of feed() would only repeat what made them.
            used = self.engine.feed_csr(idx, off, tau=point.tau, t_min=point.t_min, t_max=t_max)
            if used == 0 and self.engine.exit == exits.MAX_STEPS:
                used = 0  # decided at t_max already; fall through to the decision
            self.done += used
            self._forget_before(self.done)
            if self.engine.exit in (exits.CONFIDENT, exits.MAX_STEPS):
                out.append(self._emit(self.engine.result(), arrival))
                self._after_decision()
            elif used == 0:
                break
        return out

    def _idle(self, upto: int, t_max: int) -> bool:
        """Between decisions (``engine.t == 0``): True if there is nothing to run yet.

        A decision starts only with input: silent steps before the next input are run
        when it comes, if it comes within t_max steps. A longer silence (a paused
        sensor, a clock jump) is jumped: the engine is reset and the next decision
        starts at the next input's step. So no decision is made on silence alone, a
        silence of days costs nothing, and decisions do not depend on how the input
        was cut into packets. (A decision in progress runs on through silent steps.)"""
        if not len(self._step):  # no input buffered: wait for it
            if not self.silent and upto - self.done > t_max:
                self.engine.reset()
                self.silent = True
            if self.silent:
                self.done = self.seg_start = upto
            return True
        first = int(self._step[0])
        if self.silent or first - self.done > t_max:
            if not self.silent:
                self.engine.reset()
            self.silent = False
            self.done = self.seg_start = max(self.done, first)
        return False

    def _append(self, idx: np.ndarray, steps: np.ndarray, in_order: bool = False) -> None:
        """Buffer encoded events, keeping the buffer sorted by step (stable, so events of
        one step stay in arrival order); events behind a completed step are dropped."""
        if len(steps) and steps[0] < self.done:  # behind a completed step: cannot be fed
            late = steps < self.done
            self.dropped_events += int(late.sum())
            idx, steps = idx[~late], steps[~late]
        if not len(steps):
            return
        if not in_order and len(steps) > 1 and bool(np.any(steps[1:] < steps[:-1])):
            order = np.argsort(steps, kind="stable")
            idx, steps = idx[order], steps[order]
        if not len(self._step):
            self._idx, self._step = idx, steps
            return
        self._idx = np.concatenate([self._idx, idx])
        self._step = np.concatenate([self._step, steps])
        if steps[0] < self._step[len(self._step) - len(steps) - 1]:  # overlaps the buffer
            order = np.argsort(self._step, kind="stable")
            self._idx, self._step = self._idx[order], self._step[order]

    def _take(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """The CSR pair (indices, offsets) of steps [start, stop) of the buffer."""
        if not len(self._step) or self._step[0] >= stop:
            return _NO_EVENTS, np.zeros(stop - start + 1, np.int64)
        pos = np.searchsorted(self._step, np.arange(start, stop + 1, dtype=np.int64))
        a = int(pos[0])
        if a:
            pos -= a
        return self._idx[a : a + int(pos[-1])], pos

    def _forget_before(self, step: int) -> None:
        k = int(np.searchsorted(self._step, step))
        if k:
            self._idx, self._step = self._idx[k:], self._step[k:]

    def _emit(self, res: RunResult, arrival: float, exit_override: bool = False) -> Decision:
        origin = self.origin_us or 0
        dt = self.spec.dt_us
        if exit_override:
            res = replace(res, exit=exits.END_OF_STREAM)
        if self.seq_clock is not None:
            self.seq = max(self.seq, self.seq_clock())
        d = self.ctx.decision(
            self.stream, self.seq, res, origin + self.seg_start * dt, origin + self.done * dt,
            (self.clock() - arrival) * 1000.0,
        )
        self.seq += 1
        return d

    def _after_decision(self) -> None:
        if self.one_decision:
            self.skip_until = _NEVER
            self._idx, self._step = self._idx[:0], self._step[:0]
        elif self.policy == "window":
            end = self.seg_start + self.window_steps
            if self.done >= end:  # decided on the window's last step: the next one starts now
                self.engine.reset()
                self.seg_start = self.done
            else:
                self.skip_until = end
        elif self.policy == "decay":
            self.engine.decay(self.decay)
            self.seg_start = self.done
        else:
            self.engine.reset()
            self.seg_start = self.done


def decide_recording(
    decider: EventStreamDecider, events: np.ndarray, *, chunk_us: int, realtime: bool = False
) -> list[Decision]:
    """Replay a whole recording through ``decider`` in chunks of ``chunk_us``, paced by
    sensor time if ``realtime``; a one-decision stream stops reading once it has decided."""
    from spikecast.runtime.replay import replay_sync

    out: list[Decision] = []
    for chunk in replay_sync(events, chunk_us=chunk_us, realtime=realtime):
        out += decider.push(chunk.events, watermark_us=chunk.t1_us)
        if decider.finished:
            break
    if not out:
        out += decider.finish()
    return out


def decide_frame(
    plan_engine: Engine, ctx: DecisionContext, stream: str, seq: int, frame: np.ndarray,
    point: OperatingPoint, arrival_s: float, clock: Callable[[], float] = time.perf_counter,
) -> Decision:
    """One normalised frame (C, H, W) -> one decision with early exit."""
    res = plan_engine.run(frame, point.t_max, tau=point.tau, t_min=point.t_min)
    return ctx.decision(stream, seq, res, 0, 0, (clock() - arrival_s) * 1000.0)


__all__ = ["DecisionContext", "EventStreamDecider", "decide_frame", "decide_recording"]
