"""Structural pruning of a face ViT: whole attention heads and MLP channels of every block, by weight magnitude.

Only the inside of each block shrinks (``qkv``/``proj`` by whole heads of the unpruned ``head_dim``, ``fc1``/``fc2`` by
hidden channels); the residual width, patch embedding, final norm and the FaceNet heads stay as they are, so a pruned
student keeps its output shapes and distillation feature maps. The new sizes (:func:`block_sizes`) go to
``FaceViT(pruned=...)`` through ``backbone.model_kwargs.pruned``, which rebuilds the pruned architecture from a stored
run config (export.py, :func:`~facetx.training.checkpoint.load_face_net`): weights-only checkpoints, no pickled modules.

The selection is torch-pruning's (``tp.pruner.MetaPruner`` with ``GroupMagnitudeImportance(p=2)``): its dependency
graph traces our :class:`~facetx.models.vit.WindowAttention` (token gather, qkv reshape/unbind; the shifted windows'
bias stays off while it traces, see ``channel_trace``) and couples each head's q, k and v rows with its ``proj``
columns. Per block (local ranking, every block pruned alike): ``ceil(head_ratio * heads)`` heads go (torch-pruning's
rule; at least one must stay) and ``fc1`` keeps ``int(hidden * (1 - ratio))`` channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from facetx.errors import ConfigError
from facetx.models.facenet import FaceNet
from facetx.models.vit import FaceViT, WindowAttention

__all__ = ["block_sizes", "check_ratio", "check_same_outputs", "face_vit_of", "prune_face_net", "prune_vit"]


def check_ratio(ratio: object, key: str) -> float:
    """``ratio`` as a float in ``[0, 1)``, else a one-line :class:`ConfigError` naming ``key``."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 <= float(ratio) < 1.0:
        raise ConfigError(f"{key}={ratio!r}: expected a fraction in [0, 1) of what each block loses (0.5 = half)")
    return float(ratio)


def block_sizes(vit: FaceViT) -> dict[str, list[int]]:
    """Per-block sizes ``{"heads": [...], "mlp_hidden": [...]}``: what ``FaceViT(pruned=...)`` rebuilds."""
    return {
        "heads": [int(blk.attn.num_heads) for blk in vit.blocks],
        "mlp_hidden": [int(blk.mlp.fc1.out_features) for blk in vit.blocks],
    }


def face_vit_of(net: nn.Module, key: str = "prune.ckpt_path") -> FaceViT:
    """The :class:`FaceViT` inside a FaceNet's backbone, else a one-line :class:`ConfigError` (only our ViTs prune)."""
    vit = getattr(getattr(net, "backbone", None), "model", None)
    if not isinstance(vit, FaceViT):
        name = getattr(getattr(net, "backbone", None), "name", type(net).__name__)
        raise ConfigError(
            f"{key}: its backbone {name} is not a facetx face ViT; pruning takes facevit_* students"
            " (student=window_vit_nano, window_vit_tiny, tiny)"
        )
    return vit


def _check_sizes(vit: FaceViT, ratio: float, head_ratio: float) -> None:
    """Refuse ratios that would empty a block (torch-pruning would remove every head / channel without a word)."""
    for i, blk in enumerate(vit.blocks):
        heads = blk.attn.num_heads
        if math.ceil(head_ratio * heads) >= heads and head_ratio > 0:
            raise ConfigError(
                f"prune.head_ratio={head_ratio}: removes all {heads} heads of block {i} (ceil(head_ratio * heads)"
                f" go); use head_ratio <= {(heads - 1) / heads:g}"
            )
        if int(blk.mlp.fc1.out_features * (1 - ratio)) < 1:
            raise ConfigError(f"prune.ratio={ratio}: removes all {blk.mlp.fc1.out_features} MLP channels of block {i}")


def prune_vit(vit: FaceViT, ratio: float, head_ratio: float | None = None) -> dict[str, list[int]]:
    """Prune ``vit`` in place: ``head_ratio`` (default ``ratio``) of each block's heads, ``ratio`` of its MLP channels.

    Returns the new :func:`block_sizes`. Ratio 0 for both leaves the network untouched (torch-pruning is not run).
    The training mode is kept; the tracing forward pass runs in eval mode on one ``[1, 3, H, W]`` zero image.
    """
    ratio = check_ratio(ratio, "prune.ratio")
    head_ratio = ratio if head_ratio is None else check_ratio(head_ratio, "prune.head_ratio")
    _check_sizes(vit, ratio, head_ratio)
    if ratio == 0 and head_ratio == 0:
        return block_sizes(vit)
    embed_dim = vit.embed_dim
    blocks = list(vit.blocks)
    # the residual stream's writers: leaving them out keeps the width C (and every shape outside the blocks)
    ignored = [vit.patch_embed.proj, *(b.attn.proj for b in blocks), *(b.mlp.fc2 for b in blocks)]
    # token parameters outside any module: their channel dim is the residual width (never pruned; said to silence
    # torch-pruning's "last non-singleton dimension" guess)
    unwrapped = [(p, p.ndim - 1) for n, p in vit.named_parameters() if n in ("pos_embed", "cls_token", "reg_token")]
    was_training = vit.training
    vit.eval()
    traced = [b.attn for b in blocks if isinstance(b.attn, WindowAttention)]
    for attn in traced:
        attn.channel_trace = True  # the shifted windows' bias hides the head dim from torch-pruning (see there)
    try:
        num_heads = _run_pruner(vit, blocks, ratio, head_ratio, ignored, unwrapped)
    finally:
        for attn in traced:
            attn.channel_trace = False
        vit.train(was_training)
    for b in blocks:
        attn = b.attn
        # torch-pruning resizes the Linear layers; Attention.forward reads these attributes to reshape q, k, v
        attn.num_heads = num_heads[attn.qkv]
        attn.attn_dim = attn.num_heads * attn.head_dim
        if attn.qkv.out_features != 3 * attn.attn_dim or attn.proj.in_features != attn.attn_dim:
            raise RuntimeError(f"torch-pruning left qkv/proj at {attn.qkv} / {attn.proj} for {attn.num_heads} heads")
        if attn.qkv.in_features != embed_dim or b.mlp.fc2.out_features != embed_dim:
            raise RuntimeError(f"torch-pruning changed the residual width {embed_dim} inside {b}")
    return block_sizes(vit)


def _run_pruner(
    vit: FaceViT,
    blocks: list[nn.Module],
    ratio: float,
    head_ratio: float,
    ignored: list[nn.Module],
    unwrapped: list[tuple[nn.Parameter, int]],
) -> dict[nn.Module, int]:
    """One torch-pruning step on ``vit`` (in eval mode); returns its new head count per ``qkv`` layer."""
    import torch_pruning as tp  # an optional extra (pip install facetx[prune]): only pruning runs need it

    h, w = vit.patch_embed.img_size
    with torch.enable_grad():  # the dependency graph is traced through autograd
        pruner = tp.pruner.MetaPruner(
            vit,
            torch.zeros(1, 3, h, w, device=next(vit.parameters()).device),
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            # torch-pruning removes heads only in a group whose channel ratio is > 0 (and with prune_head_dims off,
            # nothing else): the default ratio is the attention groups' switch, the MLPs get theirs by name
            pruning_ratio=head_ratio,
            pruning_ratio_dict={b.mlp.fc1: ratio for b in blocks},
            ignored_layers=ignored,
            unwrapped_parameters=unwrapped,
            num_heads={b.attn.qkv: b.attn.num_heads for b in blocks},
            prune_num_heads=head_ratio > 0,
            prune_head_dims=False,  # whole heads only: head_dim (and the attention scale) stays
            head_pruning_ratio=head_ratio,
            global_pruning=False,  # every block loses the same share: a predictable, uniform architecture
        )
        pruner.step()
    return pruner.num_heads


def prune_face_net(
    net: nn.Module, ratio: float, head_ratio: float | None = None, key: str = "prune.ckpt_path"
) -> dict[str, list[int]]:
    """:func:`prune_vit` on the face ViT of a :class:`FaceNet` (heads, normalization, features untouched)."""
    return prune_vit(face_vit_of(net, key), ratio, head_ratio)


def check_same_outputs(pruned: FaceNet, rebuild: Callable[[], nn.Module], input_size: int = 112) -> nn.Module:
    """The network ``rebuild()`` returns (built from the pruned config, the pruned weights loaded), after checking
    that it gives exactly the pruned network's outputs on a random ``[2, 3, S, S]`` batch (both in eval mode).

    A difference means the stored config would not reproduce the pruned network: a bug, so a ``RuntimeError``.
    """
    rebuilt = rebuild()
    modes = pruned.training, rebuilt.training
    x = torch.rand(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = pruned.eval()(x), rebuilt.eval()(x)
    pruned.train(modes[0])
    rebuilt.train(modes[1])
    bad = [k for k in a if k not in b or a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]
    if bad or set(a) != set(b):
        raise RuntimeError(f"the network rebuilt from the pruned config differs from the pruned one in {bad}")
    return rebuilt
