"""The Decision Transformer (Chen et al., 2021): offline RL as sequence modelling.

A trajectory window of K timesteps becomes 3K tokens (R_1, s_1, a_1, R_2, s_2, a_2, ...): each
return-to-go R, state s and action a is embedded by its own linear map, a learned timestep
embedding is added to all three tokens of a step, and one LayerNorm normalises the result. A
causal stack of GPT blocks (``nn.layers.EncoderLayer`` run causally, as in ``models/gpt.py``)
reads them, and the action of step t is predicted from the output at the state token s_t, which
sees R_1..R_t, s_1..s_t and a_1..a_{t-1} but never a_t. Asking for a higher return-to-go at
test time asks for the behaviour that earned such returns in the data.

Windows shorter than K are padded at the start (``mask`` False there); a padded step is never
attended to. Actions are ``discrete`` (ids, embedded as one-hot vectors, cross-entropy on
logits) or ``continuous`` (vectors, tanh head, mean squared error) -- the latter is the layout
of Hugging Face's ``DecisionTransformerModel`` (see ``interop/hf_decision.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqformer.config import from_dict, to_dict
from seqformer.data.device import to_device
from seqformer.errors import ConfigError
from seqformer.models.common import (
    check_block_fields,
    family_config,
    init_gpt2,
    load_weights_into,
    save_model_dir,
)
from seqformer.nn.layers import EncoderLayer

ACTION_KINDS = ("discrete", "continuous")


@dataclass(frozen=True)
class DecisionTransformerConfig:
    """Shape of the model. ``state_dim`` and ``act_dim`` (the number of actions when
    ``action: discrete``) come from the environment; ``context`` is K, the timesteps seen at
    once (3K tokens); ``max_ep_len`` bounds the timestep embedding. ``return_scale`` divides
    returns-to-go before they are embedded (keep them around unit size). Defaults follow the
    paper's GPT-2 blocks (pre-LN, ReLU)."""

    state_dim: int = 0
    act_dim: int = 0
    action: str = "discrete"
    d_model: int = 128
    heads: int = 1
    layers: int = 3
    ffn_dim: int = 512
    context: int = 20
    max_ep_len: int = 1000
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "relu"
    norm_eps: float = 1e-5
    return_scale: float = 1.0

    # The shared block checks read these two names.
    @property
    def max_len(self) -> int:
        return 3 * self.context

    @property
    def positional(self) -> str:
        return "learned"

    def __post_init__(self) -> None:
        check_block_fields(self)
        if self.action not in ACTION_KINDS:
            raise ConfigError(f"model.action={self.action!r}; use one of "
                              f"{', '.join(ACTION_KINDS)}")
        for name in ("state_dim", "act_dim", "context", "max_ep_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{name} must be an integer >= 1, got {value!r}")
        if not self.return_scale > 0:
            raise ConfigError(f"model.return_scale must be > 0, got {self.return_scale}")


@dataclass
class DecisionBatch:
    """K-step windows: ``states`` (batch, K, state_dim) float; ``actions`` (batch, K) long ids
    (discrete) or (batch, K, act_dim) float; ``returns_to_go`` (batch, K) float; ``timesteps``
    (batch, K) long; ``mask`` (batch, K) bool, True at real steps (padding comes first)."""

    states: Tensor
    actions: Tensor
    returns_to_go: Tensor
    timesteps: Tensor
    mask: Tensor
    # n_tgt_tokens counts real timesteps (3 tokens each): the Trainer reports timesteps/s.
    count_unit: ClassVar[str] = "timesteps"

    def to(self, device: torch.device | str) -> DecisionBatch:
        return DecisionBatch(*(to_device(t, device) for t in (self.states, self.actions,
                                                        self.returns_to_go, self.timesteps,
                                                        self.mask)))

    @property
    def n_tgt_tokens(self) -> int:
        return int(self.mask.sum())


@dataclass
class DecisionOutput:
    loss: Tensor  # mean over real steps: cross-entropy (discrete) or squared error (continuous)
    nll: Tensor  # the same, detached
    actions: Tensor  # (batch, K, act_dim): logits (discrete) or tanh actions (continuous)
    n_tokens: int


class DecisionTransformer(nn.Module):
    """Embeddings of (R, s, a) + timestep -> LayerNorm -> N causal GPT blocks -> LayerNorm ->
    action head at each state token."""

    def __init__(self, config: DecisionTransformerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.return_embed = nn.Linear(1, c.d_model)
        self.state_embed = nn.Linear(c.state_dim, c.d_model)
        self.action_embed = nn.Linear(c.act_dim, c.d_model)
        self.time_embed = nn.Embedding(c.max_ep_len, c.d_model)
        self.embed_norm = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.embed_dropout = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(c.d_model, c.heads, c.ffn_dim, c.dropout, c.attention_dropout,
                         c.activation, True, c.norm_eps)
            for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.action_head = nn.Linear(c.d_model, c.act_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        init_gpt2(self, self.config.layers)

    def action_vectors(self, actions: Tensor) -> Tensor:
        """(batch, K, act_dim) float: one-hot ids (negative ids, e.g. padding, are zeros)."""
        if self.config.action == "continuous":
            return actions.float()
        ids = actions.long()
        return F.one_hot(ids.clamp(min=0), self.config.act_dim).float() * (ids >= 0).unsqueeze(-1)

    def predict(self, states: Tensor, actions: Tensor, returns_to_go: Tensor,
                timesteps: Tensor, mask: Tensor | None = None) -> Tensor:
        """Action predictions (batch, K, act_dim) from the state token of every step: logits
        (discrete) or tanh actions (continuous). Row t depends only on steps <= t, and on the
        action of step t not at all."""
        c = self.config
        batch, steps = states.shape[:2]
        if steps > c.context:
            raise ValueError(f"{steps} timesteps exceed the context model.context={c.context}")
        time = self.time_embed(timesteps.clamp(0, c.max_ep_len - 1))
        r = self.return_embed((returns_to_go.float() / c.return_scale).unsqueeze(-1)) + time
        s = self.state_embed(states.float()) + time
        a = self.action_embed(self.action_vectors(actions)) + time
        x = torch.stack((r, s, a), dim=2).reshape(batch, 3 * steps, c.d_model)
        x = self.embed_dropout(self.embed_norm(x))
        attn_mask = None
        if mask is not None and not bool(mask.all()):
            # Causal and no padded key; finite (not -inf) so a padded query row, which has
            # nothing to see, stays finite instead of turning into NaN.
            real = mask.bool().repeat_interleave(3, dim=1)  # (batch, 3K)
            n = 3 * steps
            blocked = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
            blocked = blocked.unsqueeze(0) | ~real.unsqueeze(1)  # (batch, query, key)
            attn_mask = torch.zeros(blocked.shape, dtype=x.dtype, device=x.device).masked_fill(
                blocked, torch.finfo(x.dtype).min).unsqueeze(1)
        for layer in self.layers:
            x, _ = layer(x, is_causal=attn_mask is None, attn_mask=attn_mask)
        x = self.norm(x).reshape(batch, steps, 3, c.d_model)[:, :, 1]  # the state tokens
        out = self.action_head(x)
        return torch.tanh(out) if c.action == "continuous" else out

    def forward(self, batch: DecisionBatch) -> DecisionOutput:
        preds = self.predict(batch.states, batch.actions, batch.returns_to_go, batch.timesteps,
                             batch.mask)
        real = batch.mask.bool()
        n = int(real.sum())
        if self.config.action == "continuous":
            err = (preds.float() - batch.actions.float()).pow(2).mean(-1)
            loss = (err * real).sum() / max(n, 1)
        else:
            loss = F.cross_entropy(preds.float()[real], batch.actions.long()[real],
                                   reduction="sum") / max(n, 1)
        return DecisionOutput(loss, loss.detach(), preds, n)

    @torch.inference_mode()
    def act(self, states: Tensor, actions: Tensor, returns_to_go: Tensor, timesteps: Tensor,
            mask: Tensor | None = None) -> Tensor:
        """The prediction for the last step of each row: (batch, act_dim)."""
        return self.predict(states, actions, returns_to_go, timesteps, mask)[:, -1]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- persistence -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``config.json`` (family ``decision``) and ``model.safetensors``."""
        save_model_dir(self, config_json(self.config), directory)

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> DecisionTransformer:
        config = family_config(directory, "decision", "a Decision Transformer; pass a run "
                               "trained with 'task: decision'")
        model = cls(from_dict(DecisionTransformerConfig, config, f"{directory}/config.json"))
        return load_weights_into(model, directory, map_location)


def config_json(config: DecisionTransformerConfig) -> dict:
    return {"family": "decision", **to_dict(config)}
