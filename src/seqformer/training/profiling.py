"""Where a training step's time goes: a few steps under ``torch.profiler``, summarised on a page.

A step that takes 80 ms while its GPU arithmetic needs 10 ms is held up on the host: Python,
op dispatch, kernel launches, batch collation or device syncs. GPU time is too scarce to guess
which, so :class:`StepProfiler` profiles steps ``[skip, skip + steps)`` of a real run and writes,
per profiled step (averages):

- the wall time between two :meth:`StepProfiler.step` calls;
- the host time spent inside each phase the trainer marks (``data``, ``forward``, ``backward``,
  ``optimizer``, ...) and, on CUDA, the GPU time of the kernels each phase launched;
- how many aten ops were dispatched and how many ``.item()``-style scalar reads were made;
- on CUDA: kernel launches, GPU busy time (the union of kernel/memcpy/memset intervals on all
  streams, so overlapping streams are not counted twice), host-blocking syncs with the op and
  phase that caused them, and a verdict: *host-bound* when the GPU is busy less than 60 % of
  the wall time, *device-bound* otherwise;
- the top ops by self CPU time (and, on CUDA, by the GPU time of the kernels they launched).

Files, each written atomically into ``out_dir``: ``profile.txt`` (the page), ``profile.json``
(the same numbers) and, with ``trace=True``, ``profile_trace.json`` (a Chrome/Perfetto trace;
tens of MB, hence off by default). Steps are marked ``ProfilerStep#N`` in the trace, the name
torch's own step marker uses, so trace tools split the timeline into steps.

Measuring changes what is measured: the profiler costs host time per op and per launch, so a
host-bound step gets slower under it. The page therefore also gives the median wall time of the
unprofiled steps just before (no sync there: on CUDA an approximation). The profiler starts one
step early and leaves that warm-up step out, as its first step costs extra. On CUDA the device is
synchronized before the first and at the end of the last profiled step, so that work queued by
earlier steps is not counted and the wall time includes the GPU's tail; that one sync is left
out of the counts. Writing the report takes a moment at the last profiled step, which shows in
the trainer's throughput for that logging window.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from seqformer.training.checkpoint import atomic_write, atomic_write_text

TEXT_NAME = "profile.txt"
JSON_NAME = "profile.json"
TRACE_NAME = "profile_trace.json"
HOST_BOUND_BELOW = 0.6  # GPU busy / wall under this: the GPU mostly waits for the host
TOP_OPS = 15
_FORMAT = "seqformer.step_profile/1"
_STEP_MARK = "ProfilerStep#"  # torch renames these to "ProfilerStep*" in FunctionEvent.name
_SYNC_MARK = "StepProfiler.sync"  # our own synchronize: not one of the step's syncs
_WARMUP_MARK = "StepProfiler.warmup"  # the step before the profiled ones: left out
_SCALAR_READ = "aten::_local_scalar_dense"  # under every .item(), float(t), bool(t), int(t)
# Host calls that block until the GPU has caught up. A blocking tensor copy is cudaMemcpyAsync
# followed by cudaStreamSynchronize (at::cuda::memcpy_and_sync), so it counts once, here.
_SYNC_CALLS = frozenset({
    "cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventSynchronize", "cudaMemcpy",
    "cudaMemcpy2D", "cuCtxSynchronize", "cuStreamSynchronize", "cuEventSynchronize",
    "cuMemcpyDtoH", "cuMemcpyDtoH_v2",
})
_DEVICE_WORK = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})  # kineto activity types


class StepProfiler:
    """Profiles training steps [skip, skip+steps) with torch.profiler and writes a report.

    The trainer wraps batch fetching in :meth:`data_wait`, the parts of a step in
    :meth:`phase`, calls :meth:`step` after every optimizer step and :meth:`close` when
    training ends. With ``steps == 0`` all of these are cheap no-ops, so the trainer can always
    make one. ``skip`` steps run unprofiled first: the first steps pay for allocator growth,
    autotuning and lazy initialisation, which is not where a long run spends its time. The
    profiler itself starts one step before (a warm-up step, left out of the numbers); with
    ``skip <= 1`` that is at the first :meth:`data_wait`/:meth:`phase` call. ``out_dir`` is
    written by every process that profiles: under DDP/FSDP give each rank its own, or profile
    on rank 0 only.
    """

    def __init__(
        self,
        steps: int,
        out_dir: str | Path,
        device: torch.device | str,
        skip: int = 5,
        trace: bool = False,
    ) -> None:
        if steps < 0 or skip < 0:
            raise ValueError(
                f"profiling needs steps >= 0 and skip >= 0, got steps={steps}, skip={skip}"
            )
        self.steps = steps
        self.skip = skip
        self.out_dir = Path(out_dir)
        self.device = torch.device(device)
        self.trace = trace
        self.report_path: Path | None = None  # profile.txt, once written
        self._done = steps == 0
        self._calls = 0  # step() calls so far: the index of the step now running
        # The profiler's first step costs extra host time (buffers, first records), so with
        # skip > 0 it starts one step early and that warm-up step is left out, like
        # torch.profiler.schedule(warmup=1).
        self._start_at = max(skip - 1, 0)
        self._before: deque[float] = deque(maxlen=9)  # step() times before profiling began
        self._profiler: profile | None = None
        self._marker: record_function | None = None  # the open range of the current step
        self._bounds: list[float] = []  # perf_counter at the start and end of profiled steps
        self._phases: dict[str, None] = {}  # phase names in first-use order

    @property
    def active(self) -> bool:
        """Whether the profiler is running (the profiled steps and the warm-up step before)."""
        return self._profiler is not None

    def data_wait(self) -> contextlib.AbstractContextManager[Any]:
        """Wrap fetching and collating the next batch: phase ``"data"``."""
        return self.phase("data")

    def phase(self, name: str) -> contextlib.AbstractContextManager[Any]:
        """Wrap one part of a step (``"forward"``, ``"backward"``, ``"optimizer"``, ...).

        A ``record_function(name)`` range while profiling; a ``nullcontext`` otherwise. A phase
        entered several times per step (gradient accumulation) is summed over the step.
        """
        if self._profiler is None:
            if self._done or self._calls < self._start_at:
                return contextlib.nullcontext()
            self._start()  # skip <= 1: the first phase opens the first step
        self._phases.setdefault(name, None)
        return record_function(name)

    def step(self) -> None:
        """Mark the end of a training step (call once after each optimizer step).

        Starts profiling after ``skip`` steps; after ``steps`` profiled steps stops and writes
        the report.
        """
        if self._done:
            return
        self._calls += 1
        if self._profiler is None:
            self._before.append(time.perf_counter())
            if self._calls >= self._start_at:
                self._start()
            return
        last = len(self._bounds) == self.steps
        if last:
            self._sync()  # the wall time then includes the GPU work these steps queued
        now = time.perf_counter()
        self._close_marker()
        if last:
            self._bounds.append(now)
            self._finish()
            return
        if self._bounds:
            self._bounds.append(now)
        else:  # the warm-up step ended: measuring starts here
            self._sync()
            self._bounds = [time.perf_counter()]
        self._open_marker()

    def close(self) -> None:
        """Stop profiling if training ended first; writes a report of the completed steps.

        Nothing is written if no step was completed under the profiler. Safe to call twice.
        """
        if self._profiler is None:
            self._done = True
            return
        self._sync()  # let the completed steps' kernels finish and reach the profiler
        self._close_marker()
        self._finish()

    # -------------------------------------------------------------------------------------

    def _start(self) -> None:
        activities = [ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
            torch.cuda.synchronize(self.device)  # unprofiled steps' queued work stays out
        self._profiler = profile(activities=activities)
        self._profiler.start()
        if self._calls >= self.skip:  # skip == 0: no warm-up step
            self._bounds = [time.perf_counter()]
        self._open_marker()

    def _sync(self) -> None:
        """Wait for the GPU inside a range that :func:`summarise` leaves out of the counts."""
        if self.device.type == "cuda":
            with record_function(_SYNC_MARK):
                torch.cuda.synchronize(self.device)

    def _open_marker(self) -> None:
        name = f"{_STEP_MARK}{self._calls}" if self._bounds else _WARMUP_MARK
        self._marker = record_function(name)
        self._marker.__enter__()

    def _close_marker(self) -> None:
        if self._marker is not None:
            self._marker.__exit__(None, None, None)
            self._marker = None

    def _finish(self) -> None:
        prof, self._profiler, self._done = self._profiler, None, True
        assert prof is not None
        prof.stop()
        completed = max(len(self._bounds) - 1, 0)
        if completed == 0:
            return
        walls = [1e3 * (b - a) for a, b in zip(self._bounds, self._bounds[1:])]
        before = list(self._before)
        unprofiled = [1e3 * (b - a) for a, b in zip(before, before[1:])]
        summary = summarise(
            prof.events(),
            steps=completed,
            wall_ms=walls,
            phases=list(self._phases),
            cuda=self.device.type == "cuda",
        )
        summary.update(
            device=str(self.device),
            device_name=(torch.cuda.get_device_name(self.device)
                         if self.device.type == "cuda" else "cpu"),
            torch=torch.__version__,
            first_step=self._calls - len(walls),
            unprofiled_wall_ms=statistics.median(unprofiled) if unprofiled else None,
            unprofiled_steps=len(unprofiled),
        )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.trace:
            trace_path = self.out_dir / TRACE_NAME
            atomic_write(trace_path, lambda tmp: prof.export_chrome_trace(str(tmp)))
            summary["trace"] = TRACE_NAME
        atomic_write_text(self.out_dir / JSON_NAME, json.dumps(summary, indent=1) + "\n")
        report = self.out_dir / TEXT_NAME
        atomic_write_text(report, format_report(summary))
        self.report_path = report


# -----------------------------------------------------------------------------------------
# Turning profiler events into per-step numbers
# -----------------------------------------------------------------------------------------


def _is_host(event: Any) -> bool:
    return event.device_type == DeviceType.CPU and not event.is_async


def _ancestors(event: Any) -> Iterable[Any]:
    parent = event.cpu_parent
    while parent is not None:
        yield parent
        parent = parent.cpu_parent


def _device_kind(event: Any, annotations: set[str]) -> str | None:
    """``"kernel"``, ``"gpu_memcpy"`` or ``"gpu_memset"`` for GPU work, else None.

    GPU-side copies of record_function ranges (``gpu_user_annotation``) and sync records
    (``cuda_sync``) are device events too, but not work: counting them would double the
    busy time.
    """
    kind = getattr(event, "activity_type", None)
    if kind is not None:
        return kind if kind in _DEVICE_WORK else None
    # torch without FunctionEvent.activity_type: tell them apart by name
    if event.name in annotations or event.name.startswith(("ProfilerStep", "Optimizer.")):
        return None
    if event.name.startswith("Memcpy"):
        return "gpu_memcpy"
    if event.name.startswith("Memset"):
        return "gpu_memset"
    return "kernel"


def _is_launch(name: str) -> bool:
    return name.startswith("cu") and ("LaunchKernel" in name or name == "cudaGraphLaunch")


def _union_us(intervals: Iterable[tuple[float, float]]) -> float:
    """Length of the union of ``[start, end)`` intervals: time with at least one active."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def summarise(
    events: Sequence[Any],
    steps: int,
    wall_ms: Sequence[float],
    phases: Sequence[str],
    cuda: bool,
) -> dict[str, Any]:
    """Per-step averages from ``profile.events()`` of ``steps`` completed ``ProfilerStep#``.

    Only events inside the first ``steps`` step markers count: the profiler's own start and
    stop, a step cut short by :meth:`StepProfiler.close` and our synchronize are left out.
    Host events are attributed by time, not by thread, because CUDA backward ops run on
    autograd's device thread while the main thread waits in ``backward``.
    """
    marks = sorted((e for e in events if _is_host(e) and e.name.startswith("ProfilerStep")),
                   key=lambda e: e.time_range.start)[:steps]
    if len(marks) < steps:
        raise RuntimeError(f"the profile holds {len(marks)} step markers, expected {steps}")
    begin, end = marks[0].time_range.start, marks[-1].time_range.end

    def counted(e: Any) -> bool:
        return (_is_host(e) and begin <= e.time_range.start < end
                and not e.name.startswith("ProfilerStep") and e.name != _SYNC_MARK
                and not any(a.name == _SYNC_MARK for a in _ancestors(e)))

    host = [e for e in events if counted(e)]
    wall = sum(wall_ms) / steps
    per_step = 1.0 / steps

    # ---- phases: host time of the outermost range of each name, and the ranges by time
    phase_set = set(phases)
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    top_level_us = 0.0
    for e in host:
        if e.name not in phase_set:
            continue
        up = [a.name for a in _ancestors(e)]
        if e.name not in up:
            spans[e.name].append((e.time_range.start, e.time_range.end))
        if not phase_set.intersection(up):
            top_level_us += e.time_range.end - e.time_range.start

    def phase_at(t: float) -> str:
        """The innermost phase running at time ``t``."""
        best, width = "(no phase)", float("inf")
        for name, ranges in spans.items():
            for start, stop in ranges:
                if start <= t < stop and stop - start < width:
                    best, width = name, stop - start
        return best

    def source(e: Any) -> str:
        """``aten::item in optimizer``: the op the user called, and the phase it ran in."""
        aten = [a.name for a in _ancestors(e) if a.name.startswith("aten::")]
        return f"{aten[-1] if aten else e.name} in {phase_at(e.time_range.start)}"

    aten = [e for e in host if e.name.startswith("aten::")]
    outermost = [e for e in aten
                 if not any(a.name.startswith("aten::") for a in _ancestors(e))]
    reads = Counter(source(e) for e in host if e.name == _SCALAR_READ)
    self_cpu: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for e in host:
        self_cpu[e.name][0] += 1
        self_cpu[e.name][1] += e.self_cpu_time_total

    summary: dict[str, Any] = {
        "format": _FORMAT,
        "profiled_steps": steps,
        "wall_ms": wall,
        "wall_ms_per_step": list(wall_ms),
        "phases": {},
        "outside_phases_ms": max(0.0, wall - 1e-3 * top_level_us * per_step),
        "aten_ops": len(aten) * per_step,
        "aten_ops_outermost": len(outermost) * per_step,
        "scalar_reads": sum(reads.values()) * per_step,
        "scalar_read_sources": {k: n * per_step for k, n in reads.most_common()},
        "top_self_cpu": _top(self_cpu, per_step, wall),
        "cuda": None,
        "verdict": None,
    }
    for name in phases:
        host_ms = 1e-3 * sum(b - a for a, b in spans.get(name, ())) * per_step
        summary["phases"][name] = {"host_ms": host_ms, "gpu_ms": None}
    if not cuda:
        return summary

    # ---- CUDA: work launched from inside the window, found by correlation id when we can
    launcher = {e.id: e for e in host if not getattr(e, "linked_correlation_id", 0)}
    work: list[tuple[Any, str, Any]] = []  # (device event, kind, launching op or None)
    for e in events:
        if _is_host(e) or (kind := _device_kind(e, phase_set)) is None:
            continue
        link = getattr(e, "linked_correlation_id", 0)
        if link:
            if link in launcher:
                work.append((e, kind, launcher[link]))
        elif begin <= e.time_range.start < end:
            work.append((e, kind, None))
    busy_us = _union_us((e.time_range.start, e.time_range.end) for e, _, _ in work)
    kernels = [(e, op) for e, kind, op in work if kind == "kernel"]
    syncs = Counter(source(e) for e in host if e.name in _SYNC_CALLS)
    self_gpu: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    phase_gpu_us: Counter[str] = Counter()
    for e, _, op in work:
        duration = e.time_range.end - e.time_range.start
        row = self_gpu[op.name if op is not None else e.name]
        row[0] += 1
        row[1] += duration
        if op is not None:
            for name, ranges in spans.items():
                if any(a <= op.time_range.start < b for a, b in ranges):
                    phase_gpu_us[name] += duration
    for name in phases:
        summary["phases"][name]["gpu_ms"] = 1e-3 * phase_gpu_us[name] * per_step
    busy = 1e-3 * busy_us * per_step
    summary["cuda"] = {
        "kernel_launches": sum(_is_launch(e.name) for e in host) * per_step,
        "kernels": len(kernels) * per_step,
        "gpu_busy_ms": busy,
        "gpu_kernel_sum_ms": 1e-3 * sum(e.time_range.end - e.time_range.start
                                        for e, _ in kernels) * per_step,
        "gpu_busy_fraction": busy / wall if wall > 0 else None,
        "syncs": sum(syncs.values()) * per_step,
        "sync_sources": {k: n * per_step for k, n in syncs.most_common()},
        "d2h_copies": sum(1 for e, kind, _ in work
                          if kind == "gpu_memcpy" and "DtoH" in e.name) * per_step,
        "top_self_cuda": _top(self_gpu, per_step, wall),
    }
    if not work:
        summary["verdict"] = "unknown"  # CUPTI gave nothing: no evidence either way
    elif busy < HOST_BOUND_BELOW * wall:
        summary["verdict"] = "host-bound"
    else:
        summary["verdict"] = "device-bound"
    return summary


def _top(rows: Mapping[str, list[float]], per_step: float, wall_ms: float) -> list[dict]:
    """The TOP_OPS names by time: calls and ms per step, and % of the wall time."""
    best = sorted(rows.items(), key=lambda kv: kv[1][1], reverse=True)[:TOP_OPS]
    return [{"name": name, "calls": calls * per_step, "ms": 1e-3 * us * per_step,
             "percent_wall": 100e-3 * us * per_step / wall_ms if wall_ms > 0 else None}
            for name, (calls, us) in best if us > 0]


# -----------------------------------------------------------------------------------------
# The page
# -----------------------------------------------------------------------------------------


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def _pct(part: float | None, whole: float) -> str:
    return f"{100 * part / whole:5.1f}%" if part is not None and whole > 0 else "     -"


def _sources(counts: Mapping[str, float], limit: int = 4) -> str:
    shown = [f"{name} {n:g}" for name, n in list(counts.items())[:limit]]
    more = len(counts) - limit
    return ", ".join(shown) + (f", +{more} more" if more > 0 else "")


def _table(title: str, rows: list[dict], wall: float, counted: str = "calls") -> list[str]:
    lines = [title, f"  {'op':<48} {counted:>8} {'ms':>9} {'% wall':>7}"]
    for row in rows:
        lines.append(f"  {_short(row['name']):<48} {row['calls']:>8.1f} {row['ms']:>9.3f} "
                     f"{_pct(row['ms'], wall):>7}")
    return lines


def format_report(summary: Mapping[str, Any]) -> str:
    """The human-readable page for :func:`summarise`'s numbers (all per profiled step)."""
    wall = summary["wall_ms"]
    cuda = summary["cuda"]
    lines = [
        f"seqformer step profile: {summary['profiled_steps']} steps from step "
        f"{summary.get('first_step', '?')}; all numbers are per step",
        f"device: {summary.get('device_name', '?')}, torch {summary.get('torch', '?')}",
        "",
        f"wall time            {wall:9.3f} ms   "
        f"(min {min(summary['wall_ms_per_step']):.3f}, "
        f"max {max(summary['wall_ms_per_step']):.3f})",
    ]
    if summary.get("unprofiled_wall_ms") is not None:
        lines.append(f"  unprofiled         {summary['unprofiled_wall_ms']:9.3f} ms   (median of "
                     f"the {summary['unprofiled_steps']} steps before; the profiler adds host "
                     f"time per op)")
    lines += ["", f"  {'phase':<20} {'host ms':>9} {'% wall':>7}"
              + (f" {'GPU ms':>9}" if cuda else "")]
    rows = [(name, p["host_ms"], p["gpu_ms"]) for name, p in summary["phases"].items()]
    rows.append(("(outside phases)", summary["outside_phases_ms"], None))
    for name, host_ms, gpu_ms in rows:
        gpu = (f" {gpu_ms:9.3f}" if gpu_ms is not None else f" {'':>9}") if cuda else ""
        lines.append(f"  {_short(name, 20):<20} {host_ms:9.3f} {_pct(host_ms, wall)}{gpu}")
    lines += [
        "",
        f"aten ops             {summary['aten_ops']:9.1f}   "
        f"({summary['aten_ops_outermost']:.1f} outermost: called from Python or autograd)",
        f"scalar reads         {summary['scalar_reads']:9.1f}   (.item() and co.: each a device "
        f"sync if the tensor is on the GPU)",
    ]
    if summary["scalar_read_sources"]:
        lines.append(f"  from: {_sources(summary['scalar_read_sources'])}")
    if cuda:
        lines += [
            f"kernel launches      {cuda['kernel_launches']:9.1f}   "
            f"({cuda['kernels']:.1f} kernels ran on the GPU)",
            f"GPU busy             {cuda['gpu_busy_ms']:9.3f} ms {_pct(cuda['gpu_busy_ms'], wall)}"
            f" of wall (union over streams; kernels alone sum to "
            f"{cuda['gpu_kernel_sum_ms']:.3f} ms)",
            f"device syncs         {cuda['syncs']:9.1f}   (host waits for the GPU; "
            f"{cuda['d2h_copies']:.1f} device-to-host copies)",
        ]
        if cuda["sync_sources"]:
            lines.append(f"  from: {_sources(cuda['sync_sources'])}")
    lines += ["", _verdict(summary), ""]
    lines += _table(f"top {TOP_OPS} by self CPU time (a phase's own row is Python time outside"
                    f" ops)", summary["top_self_cpu"], wall)
    if cuda:
        lines += [""] + _table(f"top {TOP_OPS} by GPU time of the kernels an op launched",
                               cuda["top_self_cuda"], wall, counted="kernels")
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _verdict(summary: Mapping[str, Any]) -> str:
    verdict, cuda = summary["verdict"], summary["cuda"]
    if verdict is None:
        slowest = max(summary["phases"].items(), key=lambda kv: kv[1]["host_ms"], default=None)
        where = (f"; most host time in {slowest[0]} "
                 f"({_pct(slowest[1]['host_ms'], summary['wall_ms']).strip()} of wall)"
                 if slowest else "")
        return f"verdict: none on CPU (no device timeline){where}"
    if verdict == "unknown":
        return "verdict: unknown -- no GPU activity was recorded (is CUPTI available?)"
    busy = f"GPU busy {100 * cuda['gpu_busy_fraction']:.0f}% of wall time"
    if verdict == "host-bound":
        return (f"verdict: host-bound -- {busy}; the GPU waits for Python, dispatch,\n"
                f"  launches, data or syncs: fewer ops or syncs help, faster kernels do not")
    return f"verdict: device-bound -- {busy}; faster (or fewer) kernels would help"
