"""Per-module learning-rate scales (``lr_scale``: TextureHead) through timm's optimizer and our schedulers."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from facetx.training.module import apply_lr_scales, build_scheduler


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine", "none"])
def test_lr_scale_groups_follow_every_schedule(make_cfg, scheduler: str) -> None:
    overrides = ["model=tiny", "model/heads=texture_spoof", "model.heads.spoof_logits.lr_scale=4.0"]
    cfg = make_cfg("train", [*overrides, f"scheduler={scheduler}"])
    net = instantiate(cfg.model, _convert_="all")
    scale = net.heads["spoof_logits"].lr_scale
    assert scale == 4.0
    opt = instantiate(cfg.optim, _convert_="all")(net)
    decay_before = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    apply_lr_scales(opt, net)
    params = [p for g in opt.param_groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(net.parameters()))  # none lost, none twice
    assert {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]} == decay_before
    texture = {id(p) for p in net.heads["spoof_logits"].parameters()}
    factory = None if scheduler == "none" else instantiate(cfg.scheduler, _convert_="all")
    sched = build_scheduler(factory, opt, total_steps=20)
    members = [{id(p) for p in g["params"]} for g in opt.param_groups]
    assert all(m <= texture or not m & texture for m in members)  # no group mixes the two rates
    for _ in range(12):
        base = {g["lr"] for g, m in zip(opt.param_groups, members, strict=True) if not m & texture}
        fast = {g["lr"] for g, m in zip(opt.param_groups, members, strict=True) if m <= texture}
        assert len(base) == 1 and len(fast) == 1 and fast.pop() == pytest.approx(scale * base.pop())
        opt.step()
        if sched is not None:
            sched["scheduler"].step()


def test_lr_scale_1_leaves_the_optimizer_as_timm_built_it(make_cfg) -> None:
    cfg = make_cfg("train", ["model=tiny", "model/heads=texture_spoof"])  # the config's lr_scale: 1.0
    net = instantiate(cfg.model, _convert_="all")
    opt = instantiate(cfg.optim, _convert_="all")(net)
    groups = [(g["lr"], g["weight_decay"], len(g["params"])) for g in opt.param_groups]
    apply_lr_scales(opt, net)
    assert [(g["lr"], g["weight_decay"], len(g["params"])) for g in opt.param_groups] == groups
    assert net.heads["spoof_logits"].lr_scale == 1.0 and all("lr_scale" not in g for g in opt.param_groups)


def test_lr_scale_must_be_positive() -> None:
    from facetx.models import TextureHead

    with pytest.raises(ValueError, match="lr_scale must be > 0"):
        TextureHead(3, (112, 112), 2, lr_scale=0.0)
