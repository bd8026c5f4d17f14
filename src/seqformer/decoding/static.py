"""Encoder-decoder decoding over fixed-shape caches, so that one step can be one compiled graph.

Why: on a GPU a small model's decoding step is a few hundred tiny kernels, and launching them
from Python costs more than running them (RESULTS.md, "Speed on CUDA": level with transformers
at batch 32, with the GPU mostly idle). If every tensor a step touches has a fixed shape and a
fixed address -- self-attention keys and values preallocated for the whole output, the
position a tensor rather than a Python int, the encoder side copied into persistent buffers --
then ``torch.compile(mode="reduce-overhead")`` captures the step once and replays it as a
CUDA graph: one launch per step.

:class:`StaticDecoding` wraps a :class:`~seqformer.models.seq2seq.Seq2Seq` behind the same
``start`` / ``step`` / ``state.select`` contract the searches use, so ``greedy_search`` and
``beam_search`` run on it unchanged. Buffers are pooled by shape (batch, source length, output
length): batches of one shape reuse one set, and so one graph. Attention runs over the whole
preallocated length with the positions not yet written masked out, which gives the same
distribution as attending over the filled prefix (checked against the dynamic cache in
tests/decoding/test_static.py).

Scope and cost: Transformer decoders (:class:`~seqformer.models.seq2seq.Seq2Seq`; not the
recurrent baselines or ensembles). Each new (batch, source length, output length) shape
compiles and captures once, so it pays where shapes repeat -- serving, benchmarks, fixed-size
batches -- and not for a file decoded in batches of every size: :func:`fixed_shape` rounds a
batch up to one of a few shapes (source width to a multiple of :data:`WIDTH_STEP`, rows to a
power of two), which is how ``seqformer transduce --static`` uses it. On an H100 the Marian
shape decoded 3.9x transformers' sentences/s greedy and 2.5x with beam 5 at batch 32
(RESULTS.md, session 10); on 2 CPU cores (inductor, no graphs) a tiny model decoded 1.2-1.3x
faster at batch 1 and about as fast at batch 8.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from seqformer.nn.attention import KVCache
from seqformer.nn.layers import LayerCache

# Source widths are rounded up to a multiple of this: a handful of shapes for a whole file.
WIDTH_STEP = 8


def bucket_width(width: int, model_max: int) -> int:
    """``width`` rounded up to a multiple of :data:`WIDTH_STEP`, never past ``model_max``."""
    return max(width, min(-(-width // WIDTH_STEP) * WIDTH_STEP, model_max))


def bucket_rows(rows: int, cap: int) -> int:
    """The next power of two at or above ``rows``, but at most ``cap`` (the budget's rows for
    this width, itself one fixed number): a lone input is not decoded as a full batch."""
    power = 1 << max(rows - 1, 0).bit_length()
    return max(rows, min(power, cap))


def fixed_shape(src: Tensor, pad_id: int, width: int, rows: int) -> Tensor:
    """``src`` padded to ``width`` columns (with ``pad_id``) and ``rows`` rows (copies of its
    first row, whose outputs the caller drops): a shape some earlier batch may have had."""
    if src.shape[1] < width:
        src = torch.nn.functional.pad(src, (0, width - src.shape[1]), value=pad_id)
    if src.shape[0] < rows:
        src = torch.cat([src, src[:1].expand(rows - src.shape[0], -1)])
    return src


@dataclass
class StaticKVCache:
    """Self-attention keys/values in preallocated (batch, heads, length, head_dim) buffers,
    written in place at ``position`` (a 0-dim tensor shared by every layer of a state)."""

    key: Tensor
    value: Tensor
    position: Tensor
    static: bool = False  # what MultiHeadAttention asks a cache (KVCache's field)

    def append(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        index = self.position.view(1)
        self.key.index_copy_(2, index, key)
        self.value.index_copy_(2, index, value)
        return self.key, self.value

    def attention_mask(self) -> Tensor:
        """(1, 1, 1, length) additive mask: 0 up to ``position``, -inf after (unwritten)."""
        length = self.key.shape[2]
        future = torch.arange(length, device=self.key.device) > self.position
        mask = torch.zeros(length, device=self.key.device, dtype=self.key.dtype)
        return mask.masked_fill(future, float("-inf")).view(1, 1, 1, length)

    def reorder(self, indices: Tensor) -> None:
        """Beam search's per-step reordering, in place: the buffers keep their addresses."""
        self.key.copy_(self.key.index_select(0, indices))
        self.value.copy_(self.value.index_select(0, indices))


@dataclass
class _Buffers:
    """One shape's persistent tensors: what a captured graph reads and writes."""

    self_kv: list[tuple[Tensor, Tensor]]
    cross_kv: list[tuple[Tensor, Tensor]]
    memory: Tensor
    memory_mask: Tensor  # (batch, source) True at padding
    position: Tensor


@dataclass
class StaticState:
    """The search-facing state; ``select`` may change the batch (beam search's first
    expansion: other buffers, of the new shape), ``select_beams`` reorders in place."""

    owner: StaticDecoding
    buffers: _Buffers
    caches: list[LayerCache]
    step: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    def select(self, indices: Tensor) -> StaticState:
        b = self.buffers
        # Gathered before _state runs: the new shape may be this one (same pooled buffers).
        memory = b.memory.index_select(0, indices)
        mask = b.memory_mask.index_select(0, indices)
        cross = [(k.index_select(0, indices), v.index_select(0, indices)) for k, v in b.cross_kv]
        own = [(k.index_select(0, indices), v.index_select(0, indices)) for k, v in b.self_kv]
        position = b.position.clone()
        state = self.owner._state(memory, mask, cross, b.self_kv[0][0].shape[2])
        for (k, v), (new_k, new_v) in zip(own, state.buffers.self_kv, strict=True):
            new_k.copy_(k)
            new_v.copy_(v)
        state.buffers.position.copy_(position)
        state.step = self.step
        return state

    def select_beams(self, indices: Tensor) -> StaticState:
        for cache in self.caches:
            cache.self_attn.reorder(indices)
        return self


class StaticDecoding:
    """A Seq2Seq seen through fixed-shape caches; ``compile=True`` compiles the step (CUDA
    graphs on a GPU). Attributes the searches read (``config``, ``bos_id``, ...) are the
    model's."""

    sized_start = True  # the searches pass max_length to start()

    def __init__(self, model: Any, compile: bool = False, backend: str | None = None) -> None:
        self.model = model
        self._pool: dict[tuple, _Buffers] = {}
        step = self._step_graph
        if compile:
            cuda = next(model.parameters()).device.type == "cuda"
            options: dict[str, Any] = {"fullgraph": True}
            if backend is not None:
                options["backend"] = backend
            elif cuda:
                options["mode"] = "reduce-overhead"
            step = torch.compile(step, **options)
        self._step = step

    def __getattr__(self, name: str) -> Any:
        model = self.__dict__.get("model")
        if model is None:
            raise AttributeError(name)
        return getattr(model, name)

    # -- the contract the searches use ------------------------------------------------------
    def start(self, src: Tensor, max_length: int) -> StaticState:
        memory, mask, _ = self.model.encode(src)
        if mask is None:
            mask = torch.zeros(src.shape, dtype=torch.bool, device=src.device)
        cross = [layer.cross_attn.project_kv(memory) for layer in self.model.decoder.layers]
        return self._state(memory, mask, cross, max_length + 1)

    def step(self, tokens: Tensor, state: StaticState) -> tuple[Tensor, StaticState]:
        b = state.buffers
        log_probs = self._step(tokens, b.position, b.memory, b.memory_mask, state.caches)
        b.position.add_(1)
        state.step += 1
        return log_probs, state

    # -- internals ----------------------------------------------------------------------------
    def _state(self, memory: Tensor, mask: Tensor, cross: list[tuple[Tensor, Tensor]],
               length: int) -> StaticState:
        """Copy this batch's encoder side into the pooled buffers of its shape."""
        batch, source = mask.shape
        key = (batch, source, length, memory.device, memory.dtype)
        b = self._pool.get(key)
        if b is None:
            layer = self.model.decoder.layers[0].self_attn
            shape = (batch, layer.heads, length, layer.head_dim)

            def zeros(*size: int, dtype: torch.dtype = memory.dtype) -> Tensor:
                t = torch.zeros(size, dtype=dtype, device=memory.device)
                torch._dynamo.mark_static_address(t)  # CUDA graphs read it where it is
                return t

            b = _Buffers(
                self_kv=[(zeros(*shape), zeros(*shape)) for _ in cross],
                cross_kv=[(zeros(*k.shape), zeros(*v.shape)) for k, v in cross],
                memory=zeros(*memory.shape),
                memory_mask=zeros(*mask.shape, dtype=torch.bool),
                position=zeros(dtype=torch.long),
            )
            self._pool[key] = b
        for (k, v), (k_buf, v_buf) in zip(cross, b.cross_kv, strict=True):
            k_buf.copy_(k)
            v_buf.copy_(v)
        b.memory.copy_(memory)
        b.memory_mask.copy_(mask)
        b.position.zero_()
        # Unwritten self-attention slots are masked out, and hold zeros or an earlier batch's
        # keys: finite either way, which matters (a masked weight is 0, but 0 * NaN is NaN).
        caches = [LayerCache(StaticKVCache(k, v, b.position),
                             KVCache(ck, cv, static=True))
                  for (k, v), (ck, cv) in zip(b.self_kv, b.cross_kv, strict=True)]
        return StaticState(self, b, caches)

    def _step_graph(self, tokens: Tensor, position: Tensor, memory: Tensor,
                    memory_mask: Tensor, caches: list[LayerCache]) -> Tensor:
        """One decoder step at ``position`` -> (batch, vocab) log-probs; fixed shapes only."""
        model = self.model
        x = model.tgt_embed(tokens.view(-1, 1)) * model.embed_scale
        if model.tgt_pos is not None:
            x = x + model.tgt_pos.at(position)
        x, _ = model.decoder(model.embed_dropout(x), memory, memory_mask, caches)
        return model.output(x[:, -1]).float().log_softmax(dim=-1)
