"""The step profiler: which steps it profiles, what it writes, and its no-op and early-stop modes.

The CUDA half of the analysis cannot run here, so it is checked on hand-made events shaped
like the ones torch.profiler gives on a GPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.autograd import DeviceType

from seqformer.training.profiling import (
    JSON_NAME,
    TEXT_NAME,
    TRACE_NAME,
    StepProfiler,
    format_report,
    summarise,
)

CPU = torch.device("cpu")


def train(profiler: StepProfiler, steps: int, layers: int = 2) -> list[bool]:
    """A trainer's loop with the profiler's hooks; returns ``active`` at the end of each step."""
    torch.manual_seed(0)
    blocks: list[nn.Module] = []
    for _ in range(layers):
        blocks += [nn.Linear(16, 16), nn.ReLU()]
    model = nn.Sequential(*blocks, nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    active = []
    for _ in range(steps):
        with profiler.data_wait():
            x, y = torch.randn(8, 16), torch.randn(8, 1)
        with profiler.phase("forward"):
            loss = (model(x) - y).pow(2).mean()
        with profiler.phase("backward"):
            loss.backward()
        with profiler.phase("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        loss.item()  # outside any phase, like a trainer's logging
        active.append(profiler.active)
        profiler.step()
    profiler.close()
    return active


def test_profiles_the_chosen_steps_and_writes_the_report(tmp_path: Path) -> None:
    profiler = StepProfiler(steps=4, out_dir=tmp_path, device=CPU, skip=2, trace=True)
    active = train(profiler, 12)

    # Steps 2..5 are profiled; step 1 is the profiler's warm-up, left out of the numbers.
    assert active == [False] + [True] * 5 + [False] * 6
    assert profiler.report_path == tmp_path / TEXT_NAME
    assert (tmp_path / TEXT_NAME).is_file() and (tmp_path / TRACE_NAME).is_file()
    assert "traceEvents" in json.loads((tmp_path / TRACE_NAME).read_text())
    report = json.loads((tmp_path / JSON_NAME).read_text())
    assert report["profiled_steps"] == 4 and report["first_step"] == 2
    assert len(report["wall_ms_per_step"]) == 4
    wall = report["wall_ms"]
    assert wall > 0
    phases = report["phases"]
    assert list(phases) == ["data", "forward", "backward", "optimizer"]
    assert 0 < phases["forward"]["host_ms"] <= wall
    assert all(p["host_ms"] > 0 and p["gpu_ms"] is None for p in phases.values())
    assert sum(p["host_ms"] for p in phases.values()) <= wall
    assert report["aten_ops"] > report["aten_ops_outermost"] > 0
    # One loss.item() per step, outside the phases (SGD reads no scalars itself).
    assert report["scalar_reads"] == 1
    assert report["scalar_read_sources"] == {"aten::item in (no phase)": 1}
    assert report["cuda"] is None and report["verdict"] is None
    assert 0 < len(report["top_self_cpu"]) <= 15
    assert any(row["name"] == "aten::addmm" for row in report["top_self_cpu"])

    text = (tmp_path / TEXT_NAME).read_text()
    assert "4 steps from step 2;" in text and "device: cpu" in text
    for name in phases:
        assert f"  {name} " in text
    assert "kernel launches" not in text  # no CUDA rows on CPU


def test_op_count_follows_the_model(tmp_path: Path) -> None:
    counts = []
    for layers in (1, 4):
        profiler = StepProfiler(steps=2, out_dir=tmp_path / str(layers), device=CPU, skip=1)
        train(profiler, 4, layers=layers)
        counts.append(json.loads((tmp_path / str(layers) / JSON_NAME).read_text())["aten_ops"])
    # Three more Linear+ReLU blocks add ops to the forward, backward and optimizer step.
    assert counts[1] > counts[0] + 3 * 6


def test_zero_steps_is_a_no_op(tmp_path: Path) -> None:
    profiler = StepProfiler(steps=0, out_dir=tmp_path / "out", device=CPU, skip=0)
    with profiler.phase("forward"):
        assert not torch.autograd.profiler._is_profiler_enabled
    assert train(profiler, 6) == [False] * 6
    assert not profiler.active and profiler.report_path is None
    assert not (tmp_path / "out").exists()


def test_close_early_reports_the_steps_profiled_so_far(tmp_path: Path) -> None:
    profiler = StepProfiler(steps=10, out_dir=tmp_path, device=CPU, skip=2)
    train(profiler, 5)  # steps 2, 3, 4 complete; train() then calls close()
    assert not profiler.active
    report = json.loads((tmp_path / JSON_NAME).read_text())
    assert report["profiled_steps"] == 3 and len(report["wall_ms_per_step"]) == 3
    assert report["phases"]["forward"]["host_ms"] > 0
    profiler.close()  # twice is harmless
    profiler.step()
    assert json.loads((tmp_path / JSON_NAME).read_text())["profiled_steps"] == 3


@pytest.mark.parametrize("steps_run", [0, 1, 2])
def test_close_before_a_profiled_step_completes_writes_nothing(
    tmp_path: Path, steps_run: int
) -> None:
    # skip=2: step 1 is the warm-up and step 2 the first profiled one, still running at close.
    profiler = StepProfiler(steps=4, out_dir=tmp_path / "out", device=CPU, skip=2)
    train(profiler, steps_run)
    assert not profiler.active and profiler.report_path is None
    assert not (tmp_path / "out").exists()


def test_skip_zero_profiles_from_the_first_step(tmp_path: Path) -> None:
    profiler = StepProfiler(steps=2, out_dir=tmp_path, device=CPU, skip=0)
    assert train(profiler, 3) == [True, True, False]
    report = json.loads((tmp_path / JSON_NAME).read_text())
    assert report["profiled_steps"] == 2 and report["first_step"] == 0


def test_rejects_negative_counts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="steps"):
        StepProfiler(steps=-1, out_dir=tmp_path, device=CPU)
    with pytest.raises(ValueError, match="skip"):
        StepProfiler(steps=2, out_dir=tmp_path, device=CPU, skip=-1)


# --- the CUDA analysis, on events shaped like torch.profiler's ---------------------------------


@dataclass(eq=False)
class Event:
    """The attributes of torch's FunctionEvent that the analysis reads."""

    name: str
    start: float  # microseconds, like FunctionEvent.time_range
    end: float
    cpu_parent: Event | None = None
    activity_type: str = "cpu_op"
    id: int = 0
    linked_correlation_id: int = 0
    is_async: bool = False
    children: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.cpu_parent is not None:
            self.cpu_parent.children.append(self)

    @property
    def device_type(self) -> DeviceType:
        on_gpu = self.activity_type in ("kernel", "gpu_memcpy", "gpu_user_annotation")
        return DeviceType.CUDA if on_gpu else DeviceType.CPU

    @property
    def time_range(self) -> SimpleNamespace:
        return SimpleNamespace(start=self.start, end=self.end)

    @property
    def self_cpu_time_total(self) -> float:
        return self.end - self.start - sum(c.end - c.start for c in self.children)


def gpu_step(t: float, ids: int) -> list[Event]:
    """One 10 ms step from time ``t``: a forward with two overlapping kernels, an optimizer
    phase with an ``.item()`` that syncs."""
    step = Event("ProfilerStep*", t, t + 10_000, activity_type="user_annotation")
    forward = Event("forward", t + 100, t + 4_100, step, "user_annotation")
    linear = Event("aten::linear", t + 200, t + 1_200, forward, id=ids)
    optimizer = Event("optimizer", t + 5_000, t + 9_000, step, "user_annotation")
    item = Event("aten::item", t + 5_100, t + 5_600, optimizer, id=ids + 1)
    scalar = Event("aten::_local_scalar_dense", t + 5_150, t + 5_550, item, id=ids + 2)
    return [
        step, forward, linear, optimizer, item, scalar,
        Event("cudaLaunchKernel", t + 300, t + 310, linear, "cuda_runtime", 900 + ids, ids),
        Event("cudaLaunchKernel", t + 320, t + 330, linear, "cuda_runtime", 901 + ids, ids),
        Event("sm90_gemm", t + 400, t + 1_400, None, "kernel", 900 + ids, ids),
        Event("sm90_gemm", t + 900, t + 1_900, None, "kernel", 901 + ids, ids),  # 2nd stream
        # GPU-side copies of the ranges: they span idle gaps, and are not work
        Event("forward", t + 400, t + 1_900, None, "gpu_user_annotation"),
        Event("ProfilerStep*", t + 400, t + 5_310, None, "gpu_user_annotation"),
        Event("cudaMemcpyAsync", t + 5_160, t + 5_190, scalar, "cuda_runtime", 902 + ids,
              ids + 2),
        Event("Memcpy DtoH (Device -> Pageable)", t + 5_300, t + 5_310, None, "gpu_memcpy",
              902 + ids, ids + 2),
        Event("cudaStreamSynchronize", t + 5_200, t + 5_500, scalar, "cuda_runtime", 903 + ids,
              ids + 2),
    ]


def gpu_events() -> list[Event]:
    events = gpu_step(0.0, 1) + gpu_step(10_000.0, 11)
    last_step = events[len(events) // 2]
    ours = Event("StepProfiler.sync", 19_800, 19_900, last_step, "user_annotation")
    events.append(ours)
    events.append(Event("cudaDeviceSynchronize", 19_810, 19_890, ours, "cuda_runtime"))
    # after the profiled steps (a step cut short by close()): not counted
    late = Event("aten::add", 25_000, 25_100, id=50)
    events += [late, Event("vectorized_add", 25_200, 26_000, None, "kernel", 950, 50)]
    return events


def test_cuda_numbers_and_a_host_bound_verdict() -> None:
    summary = summarise(gpu_events(), steps=2, wall_ms=[10.0, 10.0],
                        phases=["forward", "optimizer"], cuda=True)
    cuda = summary["cuda"]
    assert cuda["kernels"] == 2 and cuda["kernel_launches"] == 2
    # Two 1 ms kernels overlapping by 0.5 ms plus a 10 us copy: busy 1.51 ms, not 2.01 ms.
    assert cuda["gpu_busy_ms"] == pytest.approx(1.51)
    assert cuda["gpu_kernel_sum_ms"] == pytest.approx(2.0)
    assert cuda["gpu_busy_fraction"] == pytest.approx(0.151)
    assert cuda["syncs"] == 1  # our own cudaDeviceSynchronize is left out
    assert cuda["sync_sources"] == {"aten::item in optimizer": 1}
    assert cuda["d2h_copies"] == 1
    assert summary["verdict"] == "host-bound"
    assert summary["phases"]["forward"] == {"host_ms": pytest.approx(4.0),
                                            "gpu_ms": pytest.approx(2.0)}
    assert summary["phases"]["optimizer"]["gpu_ms"] == pytest.approx(0.01)
    assert summary["outside_phases_ms"] == pytest.approx(2.0)
    assert summary["aten_ops"] == 3 and summary["aten_ops_outermost"] == 2
    assert summary["scalar_reads"] == 1
    assert cuda["top_self_cuda"][0]["name"] == "aten::linear"
    assert cuda["top_self_cuda"][0]["ms"] == pytest.approx(2.0)

    text = format_report({**summary, "first_step": 5, "device_name": "H100", "torch": "x"})
    assert "verdict: host-bound" in text and "GPU busy" in text and "aten::item in" in text


def test_device_bound_when_the_gpu_is_busy_most_of_the_wall_time() -> None:
    summary = summarise(gpu_events(), steps=2, wall_ms=[2.0, 2.0],
                        phases=["forward", "optimizer"], cuda=True)
    assert summary["verdict"] == "device-bound"
    assert "verdict: device-bound" in format_report(summary)
