"""Every model config builds, and returns the documented keys and shapes in train and eval."""

from pathlib import Path

import pytest
import timm
import torch
from hydra.utils import instantiate
from timm.layers.attention import Attention

from facetx.models.vit import FaceViT, WindowAttention

MODELS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "model").glob("*.yaml"))


def test_model_list_is_complete() -> None:
    assert {"teacher", "tiny", "mobilevit_s", "mobilevit_xs", "mobilevit_xxs", "window_vit_tiny"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_model_outputs(name: str, make_cfg) -> None:
    cfg = make_cfg("train", [f"model={name}"])
    net = instantiate(cfg.model, _convert_="all")
    x = torch.rand(2, 3, 112, 112)
    for mode in ("train", "eval"):
        net.train(mode == "train")
        out = net(x)
        assert out["embedding"].shape == (2, 512)
        assert out["landmarks"].shape == (2, 68, 2)
        assert out["expression_logits"].shape == (2, 7)
        assert out["spoof_logits"].shape == (2, 2)
        feats = [k for k in out if k.startswith("feat.")]
        assert feats == [f"feat.{i}" for i in cfg.model.backbone.feature_indices]
        for k in feats:
            assert out[k].ndim == 4 and out[k].shape[0] == 2
        assert all(torch.isfinite(v).all() for v in out.values())


def test_teacher_is_vit_small_with_64_tokens(make_cfg) -> None:
    cfg = make_cfg("train", ["model=teacher"])
    net = instantiate(cfg.model, _convert_="all")
    vit = net.backbone.model
    assert isinstance(vit, FaceViT)
    assert vit.embed_dim == 384 and len(vit.blocks) == 12
    assert vit.patch_embed.grid_size == (8, 8) and vit.patch_embed.patch_size == (14, 14)
    assert sum(p.numel() for p in vit.parameters()) > 21e6


def test_window_attention_is_local_and_equals_global_with_one_window() -> None:
    kw = dict(
        img_size=112,
        patch_size=14,
        embed_dim=32,
        depth=1,
        num_heads=2,
        class_token=False,
        global_pool="avg",
        num_classes=0,
    )
    torch.manual_seed(0)
    glob, win = FaceViT(**kw).eval(), FaceViT(window=8, **kw).eval()
    win.load_state_dict(glob.state_dict())
    x = torch.randn(2, 3, 112, 112)
    assert torch.allclose(glob.forward_features(x), win.forward_features(x), atol=1e-5)
    local = FaceViT(window=4, **kw).eval()
    x2 = x.clone()
    x2[:, :, :14, :14] += 1.0  # change the top-left patch only
    d = (local.forward_features(x) - local.forward_features(x2)).abs().sum(-1)[0].view(8, 8)
    assert (d[:4, :4] > 0).all() and (d[4:, :] == 0).all() and (d[:, 4:] == 0).all()


def _roll_partition_attention(attn: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Swin's formulation, what WindowAttention computed before its gather rewrite: roll, partition into windows,
    timm's attention with the mask repeated per image, reverse the partition, roll back."""
    b, n, c = x.shape
    g, w, s = attn.grid, attn.window, attn.shift
    x = x.view(b, g, g, c)
    if s:
        x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
    x = x.view(b, g // w, w, g // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)  # [B*nW, w*w, C]
    mask = attn._mask()
    x = Attention.forward(attn, x, attn_mask=None if mask is None else mask.repeat(b, 1, 1, 1))
    x = x.view(b, g // w, g // w, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b, g, g, c)
    if s:
        x = torch.roll(x, shifts=(s, s), dims=(1, 2))
    return x.reshape(b, n, c)


@pytest.mark.parametrize("pruned", [False, True], ids=["nano", "nano-pruned"])
def test_window_attention_gather_equals_roll_and_partition(pruned: bool) -> None:
    kwargs = {"pruned": {"heads": [1] * 6, "mlp_hidden": [64] * 6}} if pruned else {}
    torch.manual_seed(0)
    vit = timm.create_model("facevit_window_nano_p14_112", **kwargs).eval()
    assert [blk.attn.shift for blk in vit.blocks] == [0, 2, 0, 2, 0, 2]
    x = torch.randn(3, 64, 128)
    for blk in vit.blocks:
        with torch.no_grad():
            ours, ref = blk.attn(x), _roll_partition_attention(blk.attn, x)
        assert torch.allclose(ours, ref, atol=1e-5), f"shift {blk.attn.shift}: {(ours - ref).abs().max():.2e}"
    # the permutation buffers are derived, not weights: checkpoints keep their keys
    assert not any("_order" in k or "_inverse" in k or "_bias" in k for k in vit.state_dict())


def test_registered_with_timm_and_typos_fail() -> None:
    assert "facevit_small_p14_112" in timm.list_models("facevit*")
    with pytest.raises(TypeError):
        timm.create_model("facevit_tiny_p14_112", depht=2)
    with pytest.raises(ValueError, match="no hub weights"):
        timm.create_model("facevit_tiny_p14_112", pretrained=True)


def test_normalization_lives_in_the_network(make_cfg) -> None:
    cfg = make_cfg("train", ["model=mobilevit_xxs"])
    net = instantiate(cfg.model, _convert_="all")
    assert net.mean.flatten().tolist() == [0.0, 0.0, 0.0] and net.std.flatten().tolist() == [1.0, 1.0, 1.0]
    teacher = instantiate(make_cfg("train", ["model=tiny"]).model, _convert_="all")
    assert teacher.mean.flatten().tolist() == [0.5, 0.5, 0.5]


def test_texture_spoof_head_reads_the_pixels_not_the_backbone(make_cfg) -> None:
    """model/heads=texture_spoof: liveness from its own CNN on the normalized image, every other head unchanged."""
    cfg = make_cfg("train", ["model=tiny", "model/heads=texture_spoof"])
    net = instantiate(cfg.model, _convert_="all").eval()
    assert net.image_heads == {"spoof_logits"}
    x = torch.rand(3, 3, 112, 112)
    spoof_params = {id(p) for p in net.heads["spoof_logits"].parameters()}
    out = net(x)
    assert out["spoof_logits"].shape == (3, 2) and out["embedding"].shape == (3, 512)
    out["spoof_logits"].sum().backward()  # the spoof loss reaches its own branch and nothing else
    grads = [p for p in net.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert grads and all(id(p) in spoof_params for p in grads)
    # it reads the image the network normalized: the same logits as the head applied by hand
    with torch.no_grad():
        by_hand = net.heads["spoof_logits"]((x - net.mean) / net.std)
    assert torch.allclose(out["spoof_logits"], by_hand, atol=1e-6)


def test_bandpass_bank_responds_to_its_own_grating_whatever_its_phase() -> None:
    """The spectral branch's filters: zero mean and unit norm; a grating excites the pair of its frequency and
    orientation most, with an energy (cos^2 + sin^2) that does not depend on where the grating's stripes fall."""
    import math

    from facetx.models.heads import oriented_bandpass_bank

    freqs, orientations = (0.15, 0.25, 0.35, 0.45), 8
    bank = oriented_bandpass_bank(freqs, orientations)
    assert bank.shape == (2 * 4 * 8, 1, 7, 7)
    assert torch.allclose(bank.sum((1, 2, 3)), torch.zeros(64), atol=1e-5)
    assert torch.allclose(bank.flatten(1).norm(dim=1), torch.ones(64), atol=1e-5)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    for fi, oi in [(1, 2), (3, 5), (0, 0)]:
        f, a = freqs[fi], math.pi * oi / orientations
        energies = []
        for shift in (0.0, 1.3, 2.9):
            grating = torch.cos(2 * math.pi * f * (xx * math.cos(a) + yy * math.sin(a)) + shift)[None, None]
            r = torch.nn.functional.conv2d(grating, bank)  # [1, 64, 26, 26]
            energies.append(r.unflatten(1, (-1, 2)).pow(2).sum(2).mean((2, 3))[0])  # [32]
        assert all(int(e.argmax()) == fi * orientations + oi for e in energies)
        best = torch.stack([e[fi * orientations + oi] for e in energies])
        assert float(best.max() / best.min()) < 1.05, best


def test_texture_head_spectral_branch_reads_the_bank() -> None:
    from facetx.models import TextureHead

    head = TextureHead(3, (112, 112), 2, spectral=True).eval()
    plain = TextureHead(3, (112, 112), 2)
    assert head.fc.in_features == plain.fc.in_features + 32  # 4 frequencies x 8 orientations
    assert "bank" in dict(head.named_buffers()) and all(p is not head.bank for p in head.parameters())
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        before = head(x)
        assert before.shape == (2, 2)
        head.bank.mul_(2.0)  # 4x the energy: log-energies move by log 4, so the logits must move
        assert not torch.allclose(head(x), before, atol=1e-4)
    with pytest.raises(ValueError, match="cycles/px"):
        TextureHead(3, (112, 112), 2, spectral=True, spectral_freqs=(0.6,))
