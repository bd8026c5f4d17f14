"""int8 weights for CPU inference: dynamic quantization of every Linear layer.

At batch sizes where decoding is arithmetic-bound, the matrix products dominate; storing the
Linear weights as int8 (per-tensor scale) and quantizing activations on the fly roughly halves
their cost on CPUs with VNNI/AVX-512 -- the same trade CTranslate2's ``int8`` compute type
makes. Embeddings, LayerNorm and attention softmax stay fp32. Outputs change slightly (the
tests bound how much); training always stays fp32.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from seqformer.errors import ConfigError


def quantize_int8(model: nn.Module) -> nn.Module:
    """The model with its ``nn.Linear`` layers replaced by dynamically quantized int8 ones.

    CPU only: PyTorch's dynamic int8 kernels (fbgemm/oneDNN) do not run on CUDA. The model is
    modified in place and returned, in eval mode.
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ConfigError("--int8 runs on CPU only; drop --int8 or use --device cpu")
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, but it is the dynamic int8
        # path that ships with torch itself; its deprecation notices are not the user's concern.
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8, inplace=True)
