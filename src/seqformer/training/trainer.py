"""The training loop: AdamW, a warmup schedule, evaluation, checkpoints and exact resume.

One loop serves every model in seqformer. It knows nothing about batches or losses beyond a
small contract, so translation, language modelling and classification share the same logging,
checkpointing and resume logic -- the parts that are easy to get subtly wrong.

Contracts
---------
``train_stream``: an iterable that yields batches forever and has ``state_dict()`` /
``load_state_dict(dict)`` (JSON-serialisable) and an ``epoch`` attribute. ``state_dict()`` must
describe the position of the *next* batch to be yielded, so a resumed stream continues exactly
where the checkpoint was taken. Each batch has ``.to(device)`` (returning a batch) and an int
``n_tgt_tokens`` used for tokens/s. A batch whose count is not tokens names what it counts in a
``count_unit`` attribute (e.g. ``"images"``; default ``"tokens"``), so the progress bar and the
final line say images/s instead of claiming tokens.

``model(batch)`` returns an object with ``.loss`` (scalar mean loss over tokens, already label
smoothed) and optionally ``.nll`` (reported, not optimised).

Run directory
-------------
``run_dir/model.safetensors``: best weights by ``config.metric`` (or the final weights when
there is no ``validate``); with ``train.ema`` these are the moving-average weights, which are
also what ``validate`` sees (see :mod:`seqformer.training.ema`); ``on_save(run_dir)`` is called
after each write so the caller can put config and tokenizers next to it. ``run_dir/last/``: the
latest complete state for ``--resume`` (``model.safetensors`` + ``trainer_state.{safetensors,
json}``, plus ``ema.safetensors`` with ``train.ema``). ``run_dir/log.jsonl``: one JSON object per
line, appended to across resumes:

- training records, every ``log_every`` steps and at the last step:
  ``{"step", "epoch", "loss", "nll", "lr", "grad_norm", "tokens_per_s", "elapsed"}`` where
  ``loss``/``nll`` are means over the steps since the previous record (``nll`` is null if the
  model gives none), ``lr`` is the rate used by this step's update, ``grad_norm`` is this step's
  global gradient norm *before* clipping, ``tokens_per_s`` counts target tokens over the same
  window (evaluation and saving excluded) -- with a batch ``count_unit`` other than tokens it
  counts those units, and the record also carries them under their own name (e.g.
  ``images_per_s``, same value; ``tokens_per_s`` stays for the tools that read it) -- and
  ``elapsed`` is seconds since the run began,
  summed over resumes; on CUDA, when the model has ``flops_per_token()`` and the GPU's peak is
  known (:func:`peak_flops`), also ``"mfu"``: model FLOPs utilisation, nanoGPT's estimate of
  achieved training FLOP/s over the GPU's dense bf16 peak;
- evaluation records: ``{"step", "epoch", "valid": {metric: value, ...}, "elapsed"}``.

Tell the two apart by the presence of ``"valid"``. On resume, records past the checkpoint's
step (written after it, then lost with the crash) are dropped, so steps never repeat.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from seqformer.errors import CheckpointError, ConfigError
from seqformer.training import distributed, fsdp
from seqformer.training.averaging import checkpoint_path, prune_checkpoints
from seqformer.training.checkpoint import (
    WEIGHTS_NAME,
    atomic_write_text,
    check_state,
    commit_directory,
    committed_directory,
    load_training_state,
    load_weights,
    preserved_rng,
    read_weights,
    save_training_state,
    save_weights,
)
from seqformer.training.ema import EMA
from seqformer.training.freezing import freeze_parameters, parameter_table
from seqformer.training.profiling import StepProfiler
from seqformer.training.schedules import SCHEDULES, make_scheduler

LOG_NAME = "log.jsonl"
LAST_DIR = "last"
EMA_NAME = "ema.safetensors"  # in last/: the moving average, so a resume continues it
# torch.compile's modes; train.compile: true is "default".
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Defaults follow Vaswani et al. (2017) base model.

    ``weight_decay`` is applied only to parameters with ``dim >= 2`` (weight matrices and
    embeddings), not to biases or LayerNorm gains: decaying those towards 0 only fights the
    normalisation and hurts (nanoGPT's rule, after Loshchilov & Hutter's AdamW).
    ``max_minutes`` is a budget for one call of :meth:`Trainer.train` -- it is meant to end a
    job before a cluster's time limit kills it, and a resumed job gets a fresh budget.
    ``anneal: time`` makes the cosine / linear decay follow the clock instead of
    ``max_steps``: the lr reaches its end when ``max_minutes`` of training (counted over
    resumes) are spent, and training stops there -- a run sized by time then ends annealed
    whatever the hardware's speed ("budgeted training", Li et al. 2020). ``max_steps`` stays a
    cap. The step at which it stops depends on the speed, so such a run is not reproducible
    bit for bit.
    ``save_every=0`` saves ``last/`` at each evaluation and at the end.
    ``keep_checkpoints=N`` also keeps the weights of the N newest saves in ``checkpoints/``
    for ``seqformer average`` (0 keeps none). ``freeze`` holds glob patterns on parameter
    names (``"encoder.layers.[0-1].*"``) whose parameters are not trained; see
    :mod:`seqformer.training.freezing`. ``ema`` (e.g. 0.999; 0 = off) keeps an exponential
    moving average of the weights, which is what validation sees and the run saves; see
    :mod:`seqformer.training.ema`. ``fsdp`` shards weights, gradients and optimizer state
    over the processes of a ``torchrun`` job instead of replicating them (DDP); see
    :mod:`seqformer.training.fsdp`. A single process ignores it.
    """

    max_steps: int = 10000
    lr: float = 5e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9
    schedule: str = "noam"
    warmup_steps: int = 4000
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    accumulate: int = 1
    eval_every: int = 500
    save_every: int = 500
    log_every: int = 50
    patience: int = 0
    metric: str = "valid_loss"
    metric_mode: str = "min"
    seed: int = 1
    device: str = "auto"
    amp: str = "auto"
    compile: bool | str = False  # true, or a torch.compile mode such as reduce-overhead
    max_minutes: float = 0.0
    anneal: str = "steps"
    progress: bool = True
    keep_checkpoints: int = 0
    freeze: list[str] = dataclasses.field(default_factory=list)
    ema: float = 0.0
    fsdp: bool = False
    profile_steps: int = 0  # > 0: profile that many steps into profile.txt
    profile_from: int = 5  # steps run before profiling (compiled runs: past their compiles)
    profile_trace: bool = False  # also a Chrome/Perfetto trace, profile_trace.json (big)

    def __post_init__(self) -> None:
        # Recipes come from YAML, where a pair is a list; freeze it into the declared tuple.
        if isinstance(self.betas, list):
            object.__setattr__(self, "betas", tuple(self.betas))

        def bad(field: str, requirement: str) -> ConfigError:
            value = getattr(self, field)
            return ConfigError(f"train.{field} must be {requirement}, got {value!r}")

        def is_int(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value: object) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool)

        for field in ("max_steps", "accumulate", "eval_every", "log_every"):
            if not is_int(getattr(self, field)) or getattr(self, field) < 1:
                raise bad(field, "an integer >= 1")
        for field in ("warmup_steps", "save_every", "patience", "seed", "keep_checkpoints",
                      "profile_steps", "profile_from"):
            if not is_int(getattr(self, field)) or getattr(self, field) < 0:
                raise bad(field, "an integer >= 0")
        for field in ("lr", "eps"):
            if not is_number(getattr(self, field)) or not getattr(self, field) > 0:
                raise bad(field, "a number > 0")
        for field in ("weight_decay", "grad_clip", "max_minutes"):
            value = getattr(self, field)
            if not is_number(value) or not 0 <= value < math.inf:
                raise bad(field, "a finite number >= 0 (0 turns it off)")
        if not is_number(self.ema) or not 0 <= self.ema < 1:
            raise bad("ema", "0 (off) or a decay in (0, 1), e.g. 0.999")
        if not is_number(self.min_lr_ratio) or not 0 <= self.min_lr_ratio <= 1:
            raise bad("min_lr_ratio", "a number in [0, 1]")
        betas_ok = (
            isinstance(self.betas, tuple)
            and len(self.betas) == 2
            and all(is_number(b) and 0 <= b < 1 for b in self.betas)
        )
        if not betas_ok:
            raise bad("betas", "a pair of numbers in [0, 1), e.g. [0.9, 0.98]")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", "one of " + ", ".join(SCHEDULES))
        if self.schedule in ("noam", "inverse_sqrt") and self.warmup_steps < 1:
            raise bad("warmup_steps", f">= 1 for schedule {self.schedule!r}")
        if not isinstance(self.metric, str) or not self.metric:
            raise bad("metric", "the name of a key returned by the validate function")
        if self.metric_mode not in ("min", "max"):
            raise bad("metric_mode", "'min' or 'max'")
        if self.anneal not in ("steps", "time"):
            raise bad("anneal", "'steps' (the decay ends at max_steps) or 'time' (at max_minutes)")
        if self.anneal == "time":
            if not self.max_minutes:
                raise bad("anneal", "'steps' unless train.max_minutes is set (anneal: time "
                          "decays the lr over that budget)")
            if self.schedule not in ("cosine", "linear"):
                raise bad("anneal", f"'steps' with schedule {self.schedule!r}; anneal: time "
                          "needs schedule cosine or linear")
        if self.amp not in ("auto", "bf16", "none"):
            raise bad("amp", "'auto', 'bf16' or 'none'")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                raise bad("device", "'auto', 'cpu', 'cuda' or 'cuda:N'") from None
        for field in ("progress", "fsdp", "profile_trace"):
            if not isinstance(getattr(self, field), bool):
                raise bad(field, "true or false")
        if not isinstance(self.compile, bool) and self.compile not in COMPILE_MODES:
            raise bad("compile", "true, false or a torch.compile mode: " + ", ".join(COMPILE_MODES))
        if self.fsdp and self.ema:
            raise ConfigError(
                "train.ema cannot be combined with train.fsdp (the average would need a whole "
                "copy of the weights on every rank); set one of them to 0/false")
        patterns_ok = isinstance(self.freeze, list | tuple) and all(
            isinstance(p, str) and p for p in self.freeze)
        if not patterns_ok:
            raise bad("freeze", 'a list of parameter name patterns, e.g. ["src_embed.*"]')


def seed_everything(seed: int) -> None:
    """Seed every RNG a run may use, so a CPU run is reproducible from its config alone."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device is {name!r} but no CUDA GPU is available; "
            f"set train.device to 'auto' or 'cpu'"
        )
    return device


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPUs that support it: same range as fp32, so no loss scaling needed."""
    if amp == "bf16":
        return torch.bfloat16
    if amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


# Dense bf16 tensor-core peaks in FLOP/s from the vendors' data sheets (the MFU denominator);
# first match on the CUDA device name wins, so the PCIe H100 precedes the SXM one.
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12,
                   "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


def peak_flops(device: torch.device) -> float | None:
    """The GPU's peak FLOP/s, ``$SEQFORMER_PEAK_FLOPS`` if set; None on CPU or unknown GPUs,
    where an MFU would be a guess."""
    override = os.environ.get("SEQFORMER_PEAK_FLOPS")
    if override:
        return float(override)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (see :class:`TrainConfig`).

    Both groups always exist, even if empty, so the optimizer state layout depends only on
    the model and a checkpoint always fits the optimizer rebuilt for resuming. The fused
    kernel (one pass over all parameters instead of a loop of small ops per tensor; torch's
    default on CPU is that loop) is used for plain parameters on CPU and CUDA; FSDP's sharded
    parameters (DTensors) take the default path.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = bool(params) and all(
        type(p) is nn.Parameter and p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point
        for p in params)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps,
                             fused=fused or None)


def _unit_label(unit: str) -> str:
    """How a throughput unit is printed: tokens keep their established short form "tok"."""
    return "tok" if unit == "tokens" else unit


def _say(message: str) -> None:
    """Print a line without tearing the progress bar (rank 0 only under torchrun)."""
    if os.environ.get("RANK", "0") == "0":
        tqdm.write(message, file=sys.stderr)


class Trainer:
    """Train ``model`` on ``train_stream``; see the module docstring for the contracts."""

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        train_stream: Iterable[Any],
        run_dir: str | Path,
        validate: Callable[[nn.Module], dict[str, float]] | None = None,
        on_save: Callable[[Path], None] | None = None,
    ) -> None:
        self.config = config
        self.train_stream = train_stream
        self.run_dir = Path(run_dir)
        self.validate = validate
        self.on_save = on_save
        self.dist = distributed.context_from_env()
        self.device = resolve_device(config.device)
        if self.dist.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        distributed.init(self.dist, self.device.type)
        self.amp_dtype = resolve_amp(config.amp, self.device)
        # self.model stays the plain module: its state_dict keys are the ones we save, and
        # validation runs on it (variable eval shapes would make a compiled model recompile).
        self.model = model.to(self.device)
        if config.freeze:
            # Before the optimizer is built, and the same on resume, so its groups line up;
            # before DDP/FSDP too, which only synchronise what is trained.
            freeze_parameters(self.model, config.freeze)
            _say(parameter_table(self.model))
        self.sharded = self.dist.active and config.fsdp
        if self.sharded:
            fsdp.shard_model(self.model)  # in place: self.model is the sharded module
        self.forward = self.model
        if config.compile:
            # reduce-overhead replays CUDA graphs, one per batch shape: with data.pad_to the
            # batches take a few fixed shapes, and a small model's step stops paying a kernel
            # launch per operation (the host, not the GPU, bounds it otherwise).
            mode = None if config.compile is True else config.compile
            self.forward = torch.compile(self.model, mode=mode)
        # Modes that replay CUDA graphs are told where each step begins, so a graph's outputs
        # (this step's loss) may be reused by the next replay only once the step is over.
        self._cuda_graphs = config.compile in ("reduce-overhead", "max-autotune")
        if self.dist.active and not self.sharded:
            # Wraps the (compiled) module: DDP all-reduces gradients as backward produces them.
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.forward, device_ids=ids)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.ema = EMA(self.model, config.ema) if config.ema else None
        flops = getattr(self.model, "flops_per_token", None)
        self.peak_flops = peak_flops(self.device) if callable(flops) else None
        self.optimizer = build_optimizer(self.model, config)
        self._started = 0.0  # when this train() call's loop began; read by _budget_spent
        self.elapsed_before = 0.0  # seconds spent in earlier train() calls of this run
        self.scheduler = make_scheduler(
            self.optimizer,
            config.schedule,
            config.warmup_steps,
            config.max_steps,
            min_lr_ratio=config.min_lr_ratio,
            progress=self._budget_spent if config.anneal == "time" else None,
        )
        # Progress, all of it saved in last/ and restored by resume.
        self.step = 0
        self.best: float | None = None
        self.bad_evals = 0  # evaluations since the last improvement
        self.saved_step: int | None = None  # step held by last/, for the Ctrl-C message

    # ---------------------------------------------------------------------------------------
    # The loop
    # ---------------------------------------------------------------------------------------

    def train(self, resume: bool = False) -> dict[str, Any]:
        """Train until ``max_steps``, early stopping, the time budget or Ctrl-C.

        Returns a summary ``{"step", "stop_reason", "interrupted", "metric", "best",
        "elapsed", "tokens_per_s", "run_dir"}`` and prints it as one line. ``stop_reason`` is
        one of ``"max_steps"``, ``"early_stopping"``, ``"time_budget"``, ``"interrupted"``.
        Ctrl-C does not propagate: the loop stops without saving (``last/`` keeps the previous
        complete checkpoint), prints how to resume and returns with ``interrupted=True``, so the
        caller can still report and exit with its own code.
        """
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self._resume()
            if self.dist.rank > 0:
                # last/ holds rank 0's random state only; the other ranks re-seed
                # deterministically so their dropout masks still differ from rank 0's.
                seed_everything(cfg.seed + self.dist.rank + 1_000_003 * self.step)
        else:
            self._refuse_to_overwrite_a_run()
            seed_everything(cfg.seed + self.dist.rank)  # ranks draw different dropout masks
        # No rank may start writing before every rank has checked the run directory.
        distributed.barrier(self.dist)
        batches = iter(self.train_stream)
        stop_reason: str | None = None
        if cfg.patience and self.bad_evals >= cfg.patience:
            stop_reason = "early_stopping"  # resumed a run that had already stopped

        self._started = time.perf_counter()
        budget_s = cfg.max_minutes * 60.0
        run_tokens = 0
        unit = "tokens"  # what n_tgt_tokens counts: the batches' count_unit, if they name one
        # Window since the last training record: sums stay on the device to avoid GPU syncs.
        window_loss = torch.zeros((), device=self.device)
        window_nll: torch.Tensor | None = None
        window_steps, window_tokens = 0, 0
        window_start, window_paused = time.perf_counter(), 0.0

        self.model.train()
        reported = False  # the step profile's path, said once
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            unit="step",
            file=sys.stderr,
            disable=not cfg.progress or not self.dist.main,
            dynamic_ncols=True,
            # Redirected to a file, a redraw per step is megabytes of carriage returns: there,
            # one line every 30 s is plenty.
            mininterval=0.1 if sys.stderr.isatty() else 30.0,
        )
        # Only rank 0 writes (and profiles); the others log into nowhere.
        profiler = StepProfiler(cfg.profile_steps if self.dist.main else 0, self.run_dir,
                                self.device, skip=cfg.profile_from, trace=cfg.profile_trace)
        log = (open(self.run_dir / LOG_NAME, "a", encoding="utf-8") if self.dist.main
               else open(os.devnull, "w", encoding="utf-8"))
        try:
            while stop_reason is None and self.step < cfg.max_steps:
                # ---- one update from `accumulate` micro-batches --------------------------
                lr = self.optimizer.param_groups[0]["lr"]
                for micro in range(cfg.accumulate):
                    with profiler.data_wait():
                        global_batch = next(batches)
                        batch, weight = distributed.shard(global_batch, self.dist)
                        batch = batch.to(self.device)
                    # Gradients are all-reduced once per update, on the last micro-batch.
                    if self._cuda_graphs:
                        torch.compiler.cudagraph_mark_step_begin()
                    with self._gradient_sync(micro == cfg.accumulate - 1):
                        with self._autocast(), profiler.phase("forward"):
                            out = self.forward(batch)
                        with profiler.phase("backward"):
                            (out.loss * (weight / cfg.accumulate)).backward()
                    # Weighted like the gradient: summed over ranks it is the global mean.
                    window_loss += out.loss.detach().float() * (weight / cfg.accumulate)
                    nll = getattr(out, "nll", None)
                    if nll is not None:
                        nll = nll.detach().float() * (weight / cfg.accumulate)
                        window_nll = nll if window_nll is None else window_nll + nll
                    window_tokens += int(global_batch.n_tgt_tokens)
                    unit = getattr(global_batch, "count_unit", "tokens")
                with profiler.phase("optimizer"):
                    grad_norm = self._clip_gradients()
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.ema is not None:
                        self.ema.update(self.model)
                self.step += 1
                profiler.step()
                if profiler.report_path is not None and not reported:
                    reported = True
                    _say(f"step profile of {cfg.profile_steps} steps written to "
                         f"{profiler.report_path}")
                window_steps += 1
                bar.update(1)

                # ---- log, evaluate, checkpoint, stop ------------------------------------
                if cfg.anneal == "time":  # the schedule's clock: the whole run's time
                    out_of_time = self._budget_spent() >= 1.0
                else:
                    out_of_time = budget_s > 0 and time.perf_counter() - self._started >= budget_s
                if budget_s > 0:
                    out_of_time = distributed.any_rank(self.dist, out_of_time, self.device)
                finished = self.step >= cfg.max_steps or out_of_time
                if self.step % cfg.log_every == 0 or finished:
                    seconds = time.perf_counter() - window_start - window_paused
                    if self.dist.active:  # every rank gets here at the same step
                        window_loss = distributed.global_mean(self.dist, window_loss)
                        if window_nll is not None:
                            window_nll = distributed.global_mean(self.dist, window_nll)
                    record = {
                        "step": self.step,
                        "epoch": getattr(self.train_stream, "epoch", None),
                        "loss": (window_loss / window_steps).item(),
                        "nll": None if window_nll is None else (window_nll / window_steps).item(),
                        "lr": lr,
                        "grad_norm": grad_norm.item(),
                        "tokens_per_s": window_tokens / max(seconds, 1e-9),
                        "elapsed": self._elapsed(),
                    }
                    if unit != "tokens":
                        record[f"{unit}_per_s"] = record["tokens_per_s"]
                    if self.peak_flops:
                        achieved = self.model.flops_per_token() * record["tokens_per_s"]
                        record["mfu"] = achieved / self.peak_flops
                    self._check_finite(record["loss"])
                    self._write(log, record)
                    bar.set_postfix(
                        loss=f"{record['loss']:.3f}",
                        lr=f"{lr:.2e}",
                        **{f"{_unit_label(unit)}_s": f"{record['tokens_per_s']:,.0f}"},
                        **({"mfu": f"{record['mfu']:.1%}"} if "mfu" in record else {}),
                        refresh=False,
                    )
                    run_tokens += window_tokens
                    window_loss.zero_()
                    window_nll = None
                    window_steps, window_tokens = 0, 0
                    window_start, window_paused = time.perf_counter(), 0.0

                pause_start = time.perf_counter()
                evaluated = False
                if self.validate is not None and (self.step % cfg.eval_every == 0 or finished):
                    evaluated = True
                    if not self._evaluate(log) and cfg.patience and self.bad_evals >= cfg.patience:
                        stop_reason = "early_stopping"
                if stop_reason is None and finished:
                    stop_reason = "max_steps" if self.step >= cfg.max_steps else "time_budget"
                periodic = self.step % cfg.save_every == 0 if cfg.save_every else evaluated
                if stop_reason is not None or periodic:
                    self._save_last()
                window_paused += time.perf_counter() - pause_start
        except KeyboardInterrupt:
            stop_reason = "interrupted"
            if self.saved_step is None:
                _say(f"interrupted at step {self.step}; nothing was saved yet, start again")
            else:
                _say(
                    f"interrupted at step {self.step}; {self.run_dir / LAST_DIR} holds step "
                    f"{self.saved_step} -- continue from there with --resume"
                )
        finally:
            profiler.close()
            bar.close()
            log.close()

        if stop_reason is None:
            stop_reason = "max_steps"  # resumed a run that had already reached max_steps
        if self.validate is None and stop_reason != "interrupted":
            self._save_best()
        distributed.barrier(self.dist)  # nobody reads the run before rank 0 has written it
        return self._summary(stop_reason, run_tokens + window_tokens, unit)

    # ---------------------------------------------------------------------------------------
    # Pieces of the loop
    # ---------------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _gradient_sync(self, last_micro_batch: bool) -> contextlib.AbstractContextManager[Any]:
        """Let DDP/FSDP skip the gradient exchange on all but the last micro-batch."""
        if self.sharded:
            self.model.set_requires_gradient_sync(last_micro_batch)
        elif self.dist.active and not last_micro_batch:
            return self.forward.no_sync()
        return contextlib.nullcontext()

    def _clip_gradients(self) -> torch.Tensor:
        """Clip to ``grad_clip`` and return the norm *before* clipping (what the log shows)."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return torch.zeros((), device=self.device)
        if self.config.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm(grads)
        return fsdp.as_plain(norm) if self.sharded else norm

    def _evaluate(self, log: TextIO) -> bool:
        """Run ``validate``; on improvement save the best weights. Returns whether it improved.

        Runs under ``no_grad``, the training autocast, and ``preserved_rng`` so that
        evaluating never changes the training trajectory (see ``preserved_rng``).
        """
        self.model.eval()
        whole = fsdp.gathered(self.model) if self.sharded else contextlib.nullcontext()
        with preserved_rng(), torch.no_grad(), self._autocast(), whole:
            metrics = {name: float(value)
                       for name, value in self.validate(self.final_model).items()}
        self.model.train()
        if self.config.metric not in metrics:
            raise ConfigError(
                f"train.metric is {self.config.metric!r} but validation returned only "
                f"{sorted(metrics)}; set train.metric to one of these"
            )
        value = metrics[self.config.metric]
        improved = math.isfinite(value) and (
            self.best is None
            or (value < self.best if self.config.metric_mode == "min" else value > self.best)
        )
        if improved:
            self.best, self.bad_evals = value, 0
            self._save_best()
        else:
            self.bad_evals += 1
        self._write(
            log,
            {
                "step": self.step,
                "epoch": getattr(self.train_stream, "epoch", None),
                "valid": metrics,
                "elapsed": self._elapsed(),
            },
        )
        shown = " ".join(f"{name} {value:.4g}" for name, value in metrics.items())
        _say(f"step {self.step} | {shown}" + (" | best" if improved else ""))
        return improved

    @property
    def final_model(self) -> nn.Module:
        """What is validated and saved as the run's model: the EMA weights when kept."""
        return self.model if self.ema is None else self.ema.module

    def _weights(self, model: nn.Module) -> nn.Module | dict[str, torch.Tensor]:
        """What to save of ``model``: itself, or its gathered weights (every rank calls this)."""
        return fsdp.full_state_dict(model) if self.sharded else model

    def _save_best(self) -> None:
        weights = self._weights(self.final_model)
        if not self.dist.main:
            return
        save_weights(weights, self.run_dir / WEIGHTS_NAME)
        if self.on_save is not None:
            self.on_save(self.run_dir)

    def _save_last(self) -> None:
        """Write the resumable state into a scratch directory, then swap it in as last/.

        The three files belong together; writing them in place would leave a mix of old and
        new files if Ctrl-C or a crash came between two of them.
        """
        self.saved_step = self.step
        weights = self._weights(self.model)
        optimizer_state = fsdp.optimizer_state(self.model, self.optimizer) if self.sharded else None
        if not self.dist.main:
            return
        scratch = self.run_dir / f"{LAST_DIR}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        save_weights(weights, scratch / WEIGHTS_NAME)
        if self.ema is not None:
            save_weights(self.ema.module, scratch / EMA_NAME)
        extra = {
            "ema_updates": None if self.ema is None else self.ema.updates,
            "stream": self.train_stream.state_dict(),
            "best": self.best,
            "bad_evals": self.bad_evals,
            "elapsed": self._elapsed(),
            "metric": self.config.metric,
            "config": dataclasses.asdict(self.config),
        }
        save_training_state(scratch, self.optimizer, self.scheduler, self.step, extra,
                            optimizer_state=optimizer_state)
        commit_directory(scratch, self.run_dir / LAST_DIR)
        self.saved_step = self.step
        if self.config.keep_checkpoints:
            save_weights(weights, checkpoint_path(self.run_dir, self.step))
            prune_checkpoints(self.run_dir, self.config.keep_checkpoints)

    def _resume(self) -> None:
        """Restore weights, optimizer, scheduler, RNGs, stream position and progress counters.

        The config is taken from the caller, not the checkpoint, so a run can be extended
        (larger ``max_steps``) or given a new time budget; with an unchanged config the
        continued run is bit-identical on CPU to one that was never stopped.
        """
        last = committed_directory(self.run_dir / LAST_DIR)
        if last is None:
            raise CheckpointError(
                f"{self.run_dir / LAST_DIR}: nothing to resume in {self.run_dir}; "
                f"drop --resume to start a new run"
            )
        if self.sharded:
            state = read_weights(last / WEIGHTS_NAME)
            check_state(state, self.model.state_dict(), last / WEIGHTS_NAME)
            fsdp.load_state_dict(self.model, state)
            self.step, extra = load_training_state(
                last, self.optimizer, self.scheduler,
                load_optimizer=lambda s: fsdp.load_optimizer_state(self.model, self.optimizer, s))
        else:
            load_weights(self.model, last / WEIGHTS_NAME)
            self.step, extra = load_training_state(last, self.optimizer, self.scheduler)
        if self.ema is not None:
            if not (last / EMA_NAME).is_file():
                raise CheckpointError(
                    f"{last}: this run was trained without train.ema, so there is no average "
                    "to continue; resume with train.ema: 0 or start a new run")
            load_weights(self.ema.module, last / EMA_NAME)
            self.ema.updates = int(extra.get("ema_updates") or self.step)
        with preserved_rng():  # a stream may draw random numbers to rebuild its shuffle
            self.train_stream.load_state_dict(extra["stream"])
        self.best = extra["best"]
        self.bad_evals = extra["bad_evals"]
        self.elapsed_before = extra["elapsed"]
        self.saved_step = self.step
        self._truncate_log(self.step)
        _say(f"resuming {self.run_dir} from step {self.step}")

    def _refuse_to_overwrite_a_run(self) -> None:
        log = self.run_dir / LOG_NAME
        has_log = log.is_file() and log.stat().st_size > 0
        if committed_directory(self.run_dir / LAST_DIR) is not None or has_log:
            raise CheckpointError(
                f"{self.run_dir} already holds a training run; pass --resume to continue it, "
                f"or choose a new output directory"
            )

    def _truncate_log(self, step: int) -> None:
        """Drop log records written after the checkpoint we resume from (and torn lines)."""
        path = self.run_dir / LOG_NAME
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue
        atomic_write_text(path, "".join(kept))

    def _check_finite(self, loss: float) -> None:
        if not math.isfinite(loss):
            raise ConfigError(
                f"training diverged at step {self.step} (loss {loss}); lower train.lr or set "
                f"train.grad_clip, then start again or --resume from {self.run_dir / LAST_DIR}"
            )

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self._started

    def _budget_spent(self) -> float:
        """Fraction of ``max_minutes`` used by the run so far (0 before the loop starts):
        the clock ``anneal: time`` decays the lr by."""
        if not self._started:
            return 0.0
        return min(1.0, self._elapsed() / (self.config.max_minutes * 60.0))

    @staticmethod
    def _write(log: TextIO, record: dict[str, Any]) -> None:
        log.write(json.dumps(record) + "\n")
        log.flush()  # the log is read while training runs, and must survive a crash

    def _summary(self, stop_reason: str, tokens: int, unit: str = "tokens") -> dict[str, Any]:
        seconds = time.perf_counter() - self._started
        summary = {
            "step": self.step,
            "stop_reason": stop_reason,
            "interrupted": stop_reason == "interrupted",
            "metric": self.config.metric if self.validate is not None else None,
            "best": self.best,
            "elapsed": self._elapsed(),
            "tokens_per_s": tokens / max(seconds, 1e-9),
            "run_dir": str(self.run_dir),
        }
        if unit != "tokens":
            summary[f"{unit}_per_s"] = summary["tokens_per_s"]
        best = "" if self.best is None else f" | best {self.config.metric} {self.best:.4g}"
        _say(
            f"step {self.step} ({stop_reason}){best} | {summary['elapsed'] / 60:.1f} min | "
            f"{summary['tokens_per_s']:,.0f} {_unit_label(unit)}/s | {self.run_dir}"
        )
        return summary
