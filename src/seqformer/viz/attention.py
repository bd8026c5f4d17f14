"""Attention maps of a trained encoder-decoder: what each output token looked at.

The model decodes first (greedy or beam, with the fast fused attention), then the chosen output
is fed back once with teacher forcing on the weight-returning path. Causal masking makes that
pass see exactly what each incremental step saw, so the maps are those of the decoding itself,
and the normal decoding path never pays for materialising the weights.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from seqformer.errors import UserError

KINDS = ("cross", "encoder", "decoder")


@dataclass
class AttentionMaps:
    """Weights per layer, each (heads, queries, keys), with a label for every row and column."""

    source: str
    output: str
    src_pieces: list[str]  # encoder positions
    in_pieces: list[str]  # decoder inputs: <s> + output tokens
    out_pieces: list[str]  # what each decoder position produced: output tokens + </s>
    encoder: list[Tensor]  # (heads, src, src)
    decoder: list[Tensor]  # (heads, tgt, tgt)
    cross: list[Tensor]  # (heads, tgt, src)

    def layers(self, kind: str) -> list[Tensor]:
        if kind not in KINDS:
            raise UserError(f"--kind {kind!r}: use one of {', '.join(KINDS)}")
        layers = getattr(self, kind)
        if not layers:
            have = [k for k in KINDS if getattr(self, k)]
            raise UserError(f"--kind {kind}: this model has no {kind} attention (a recurrent "
                            f"model attends only from the decoder to the source); use --kind "
                            f"{' or '.join(have) or 'cross'}")
        return layers

    def labels(self, kind: str) -> tuple[list[str], list[str]]:
        """(column labels, row labels) for ``kind``."""
        if kind == "encoder":
            return self.src_pieces, self.src_pieces
        if kind == "decoder":
            return self.in_pieces, self.out_pieces
        return self.src_pieces, self.out_pieces

    def select(self, kind: str, layer: int, head: int | None) -> Tensor:
        """One (queries, keys) matrix; ``head=None`` averages the heads."""
        layers = self.layers(kind)
        if not -len(layers) <= layer < len(layers):
            raise UserError(f"--layer {layer} is out of range: the {kind} stack has "
                            f"{len(layers)} layers (0..{len(layers) - 1}, or -1 for the last)")
        weights = layers[layer]
        if head is None:
            return weights.mean(0)
        if not 0 <= head < weights.shape[0]:
            raise UserError(f"--head {head} is out of range: the model has {weights.shape[0]} "
                            f"heads (0..{weights.shape[0] - 1}); or use --mean")
        return weights[head]


@torch.inference_mode()
def attention_maps(transducer, text: str, beam: int = 1) -> AttentionMaps:
    """Decode ``text`` and return every attention matrix of that decoding."""
    model, src_tok, tgt_tok = transducer.model, transducer.src_tok, transducer.tgt_tok
    result = transducer.transduce([text], beam=beam, nbest=1)[0]
    tokens = result.hypotheses[0].tokens
    device = transducer.device
    src = torch.tensor([transducer.encode_sources([text])[0]], device=device)
    tgt_in = torch.tensor([[model.bos_id, *tokens]], device=device)
    memory, mask, enc_weights = model.encode(src, need_weights=True)
    _, dec_weights = model.decode(tgt_in, memory, mask, need_weights=True)
    return AttentionMaps(
        source=text,
        output=result.texts[0],
        src_pieces=src_tok.pieces(src[0].tolist()),
        in_pieces=["<s>", *tgt_tok.pieces(tokens)],
        out_pieces=[*tgt_tok.pieces(tokens), "</s>"],
        # A model without some kind of attention (an RNN has no self-attention) gives no
        # weights or zero heads for it: that kind is then absent, not a blank chart.
        encoder=[w[0].float().cpu() for w in enc_weights if w.shape[1] > 0],
        decoder=[self_w[0].float().cpu() for self_w, _ in dec_weights if self_w.shape[1] > 0],
        cross=[cross_w[0].float().cpu() for _, cross_w in dec_weights if cross_w.shape[1] > 0],
    )


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _heatmap(ax, matrix: Tensor, cols: list[str], rows: list[str], title: str, fig,
             colorbar: bool = True) -> None:
    image = ax.imshow(matrix.numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_title(title, fontsize=9)
    if colorbar:
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)


def _axis_names(kind: str) -> tuple[str, str]:
    return {"cross": ("source", "output"), "encoder": ("source (keys)", "source (queries)"),
            "decoder": ("decoder input", "output")}[kind]


def draw(maps: AttentionMaps, kind: str = "cross", layer: int = -1, head: int | None = None,
         grid: bool = False, heads_panels: bool = False, dpi: int = 100):
    """A matplotlib figure: one heatmap (a head or the mean), one panel per head of a layer
    (``heads_panels``), or the whole layers x heads grid (``grid``)."""
    plt = _pyplot()
    cols, rows = maps.labels(kind)
    layers = maps.layers(kind)
    n_layers, n_heads = len(layers), layers[0].shape[0]
    cell = (max(2.5, 0.28 * len(cols) + 1.2), max(2.2, 0.28 * len(rows) + 0.8))
    xname, yname = _axis_names(kind)
    if grid or heads_panels:
        maps.select(kind, layer, None)  # validates the layer
        which = range(n_layers) if grid else [layer % n_layers]
        fig, axes = plt.subplots(len(which), n_heads, squeeze=False, dpi=dpi,
                                 figsize=(cell[0] * n_heads, cell[1] * len(which)))
        for r, li in enumerate(which):
            for h in range(n_heads):
                _heatmap(axes[r][h], layers[li][h], cols, rows, f"layer {li} head {h}", fig,
                         colorbar=h == n_heads - 1)
    else:
        matrix = maps.select(kind, layer, head)
        fig, ax = plt.subplots(figsize=(cell[0] + 1.0, cell[1] + 0.6), dpi=dpi)
        which_head = "mean of heads" if head is None else f"head {head}"
        _heatmap(ax, matrix, cols, rows, f"{kind} attention, layer {layer % n_layers}, "
                 f"{which_head}", fig)
        ax.set_xlabel(xname)
        ax.set_ylabel(yname)
    fig.suptitle(f"{maps.source}  ->  {maps.output}", fontsize=10)
    fig.tight_layout()
    return fig


def save_png(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def _png_base64(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    _pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def html_report(maps: AttentionMaps, path: str | Path) -> int:
    """One self-contained page: input, output, and every layer/head of every kind inline.

    Returns the number of images, so callers (and tests) can check nothing was left out.
    """
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>seqformer attention</title>",
        "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%}"
        "h2{margin-top:2em}</style></head><body>",
        f"<h1>Attention</h1><p><b>input:</b> {html.escape(maps.source)}<br>"
        f"<b>output:</b> {html.escape(maps.output)}</p>",
    ]
    images = 0
    for kind in ("cross", "encoder", "decoder"):
        if not getattr(maps, kind):
            continue  # the model has no such attention (e.g. an RNN's self-attention)
        layers = maps.layers(kind)
        parts.append(f"<h2>{kind} attention</h2>")
        for li in range(len(layers)):
            parts.append(f"<h3>layer {li}</h3>")
            for head in [None, *range(layers[li].shape[0])]:
                label = "mean of heads" if head is None else f"head {head}"
                data = _png_base64(draw(maps, kind, li, head))
                parts.append(f"<figure><img alt='{kind} layer {li} {label}' "
                             f"src='data:image/png;base64,{data}'><figcaption>{kind}, layer "
                             f"{li}, {label}</figcaption></figure>")
                images += 1
    parts.append("</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return images
