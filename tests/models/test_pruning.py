"""Structural pruning of face ViTs: whole heads and MLP channels go, the stored sizes rebuild the same network."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from facetx.errors import ConfigError, user_message
from facetx.models.pruning import block_sizes, check_same_outputs, face_vit_of, prune_face_net, prune_vit
from facetx.models.vit import FaceViT

#: a 2-block, 32-d windowed ViT with 4 heads of 8 dims: heads can be halved, as in the real students
TINY_WINDOW = dict(embed_dim=32, depth=2, num_heads=4)


def _vit(window: bool = True, **kwargs) -> FaceViT:
    torch.manual_seed(0)
    name = "facevit_window_nano_p14_112" if window else "facevit_tiny_p14_112"
    return timm.create_model(name, num_classes=0, **{**TINY_WINDOW, **kwargs}).eval()


def _x() -> torch.Tensor:
    return torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("window", [True, False], ids=["window", "global"])
def test_pruned_forward_equals_the_network_rebuilt_from_its_sizes(window: bool) -> None:
    vit = _vit(window)
    sizes = prune_vit(vit, 0.5)
    assert sizes == {"heads": [2, 2], "mlp_hidden": [64, 64]}
    rebuilt = _vit(window, pruned=sizes)
    rebuilt.load_state_dict(vit.state_dict())  # strict: same keys, same shapes
    with torch.no_grad():
        assert torch.equal(rebuilt(_x()), vit(_x()))
    assert block_sizes(rebuilt) == sizes and rebuilt.blocks[0].attn.head_dim == 8  # head_dim kept


def _kept(old: torch.nn.Linear, new: torch.nn.Linear) -> list[int]:
    """The input columns of the unpruned ``old`` layer that its pruned copy ``new`` kept."""
    cols_old, cols_new = old.weight.T, new.weight.T  # [in, out]
    return [int((cols_old == c).all(1).nonzero()[0]) for c in cols_new]


def test_pruning_removes_whole_heads_and_mlp_channels() -> None:
    """The pruned network computes what the unpruned one computes with the removed heads' ``proj`` columns and the
    removed channels' ``fc2`` columns zeroed: q, k and v rows of each kept head stayed together."""
    vit = _vit()
    reference = copy.deepcopy(vit)
    prune_vit(vit, 0.5)
    with torch.no_grad():
        for old, new in zip(reference.blocks, vit.blocks, strict=True):
            d = old.attn.head_dim
            kept = _kept(old.attn.proj, new.attn.proj)
            heads = sorted({c // d for c in kept})
            assert len(heads) == 2 and sorted(kept) == [h * d + i for h in heads for i in range(d)]  # whole heads
            for layer, keep in ((old.attn.proj, kept), (old.mlp.fc2, _kept(old.mlp.fc2, new.mlp.fc2))):
                removed = sorted(set(range(layer.in_features)) - set(keep))
                layer.weight[:, removed] = 0
        assert torch.allclose(vit(_x()), reference(_x()), atol=1e-5)


def _block_weights(vit: FaceViT) -> int:
    return sum(m.weight.numel() for b in vit.blocks for m in (b.attn.qkv, b.attn.proj, b.mlp.fc1, b.mlp.fc2))


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_parameters_drop_by_the_ratio(ratio: float) -> None:
    vit = _vit()
    before, total = _block_weights(vit), sum(p.numel() for p in vit.parameters())
    prune_vit(vit, ratio)
    # heads: ceil(ratio * 4) of 4 go (1 or 2), MLP channels: int(128 * (1 - ratio)) stay
    assert _block_weights(vit) / before == pytest.approx(1 - ratio, abs=0.01)
    assert sum(p.numel() for p in vit.parameters()) < total


def test_ratio_zero_is_the_identity() -> None:
    vit, reference = _vit(), _vit()
    assert prune_vit(vit, 0.0) == {"heads": [4, 4], "mlp_hidden": [128, 128]}
    for (k, v), (k2, v2) in zip(vit.state_dict().items(), reference.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)


def test_heads_only_and_mlp_only() -> None:
    vit = _vit()
    assert prune_vit(vit, 0.0, head_ratio=0.5) == {"heads": [2, 2], "mlp_hidden": [128, 128]}
    vit = _vit()
    assert prune_vit(vit, 0.5, head_ratio=0.0) == {"heads": [4, 4], "mlp_hidden": [64, 64]}


def test_bad_ratio_is_a_one_line_config_error() -> None:
    vit = _vit()
    for ratio in (1.0, -0.1, 1.5, "half", True, None):
        with pytest.raises(ConfigError, match=r"prune\.ratio=") as e:
            prune_vit(vit, ratio)  # type: ignore[arg-type]
        assert "\n" not in str(e.value)
    assert block_sizes(vit) == {"heads": [4, 4], "mlp_hidden": [128, 128]}  # refused before anything changed


def test_a_head_ratio_that_empties_a_block_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"removes all 4 heads of block 0.*head_ratio <= 0.75"):
        prune_vit(_vit(), 0.5, head_ratio=0.8)


def test_face_net_prunes_inside_the_blocks_only(make_cfg) -> None:
    cfg = make_cfg("train", ["model=tiny"])
    net = instantiate(cfg.model, _convert_="all").eval()
    before = {k: v.shape for k, v in net.state_dict().items()}
    sizes = prune_face_net(net, 0.5)
    changed = {k for k, v in net.state_dict().items() if v.shape != before[k]}
    assert changed and all(".blocks." in k and (".attn." in k or ".mlp." in k) for k in changed)
    out = net(torch.rand(2, 3, 112, 112))
    assert out["embedding"].shape == (2, 512) and out["feat.1"].shape == (2, 32, 8, 8)
    with open_dict(cfg):
        cfg.model.backbone.model_kwargs.pruned = sizes

    def rebuild() -> torch.nn.Module:
        built = instantiate(cfg.model, _convert_="all")
        built.load_state_dict(net.state_dict())
        return built

    assert block_sizes(face_vit_of(check_same_outputs(net, rebuild))) == sizes
    with pytest.raises(RuntimeError, match="differs"):  # another network is caught
        check_same_outputs(net, lambda: instantiate(cfg.model, _convert_="all"))


def test_pruned_sizes_refuse_unknown_keys_and_bad_lengths_with_one_line(make_cfg) -> None:
    with pytest.raises(ConfigError, match=r"model_kwargs\.pruned: expected a mapping with keys") as e:
        _vit(pruned={"heads": [2, 2], "mlp_hiden": [64, 64]})
    assert "mlp_hiden" in str(e.value)
    with pytest.raises(ConfigError, match=r"model_kwargs\.pruned\.heads: expected 2 positive integers"):
        _vit(pruned={"heads": [2]})
    with pytest.raises(ConfigError, match=r"pruned\.mlp_hidden"):
        _vit(pruned={"mlp_hidden": [64, 0]})
    cfg = make_cfg("train", ["model=tiny", "+model.backbone.model_kwargs.pruned.head=[1,1]"])
    with pytest.raises(Exception) as e:  # as instantiate wraps it: the user still gets one line
        instantiate(cfg.model, _convert_="all")
    message = user_message(e.value)
    assert "model_kwargs.pruned" in message and "\n" not in message


def test_only_face_vits_prune() -> None:
    with pytest.raises(ConfigError, match="not a facetx face ViT"):
        face_vit_of(torch.nn.Linear(2, 2))
