"""Sensitivity pass: measure, per node group and per node, what INT8 costs in latency and in accuracy; keep in FP32
what makes the model slower on this CPU or what costs more than the allowed accuracy drop.

The pass is written against four callbacks so that it does not care how models are built, timed or scored:

- ``quantize(recipe, tag) -> path``: a Q/DQ model for ``recipe`` (calibration is cached, so this is cheap);
- ``speed({name: path}) -> {name: fp32 time / time}``: speed-ups over FP32, measured interleaved in one run;
- ``error(path) -> float``: output error of a model against FP32 on a few training images (the cheap proxy);
- ``metric(path) -> float``: the held-out selection metric (verification accuracy, a fraction).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facetx.quant.static import QuantRecipe

log = logging.getLogger(__name__)

QuantizeFn = Callable[[QuantRecipe, str], Path]
SpeedFn = Callable[[Mapping[str, Path]], dict[str, float]]
ScoreFn = Callable[[Path], float]


@dataclass
class SensitivityReport:
    """What the pass measured and decided (all rows are plain dicts for JSON/Markdown)."""

    recipe: QuantRecipe
    groups: list[dict] = field(default_factory=list)
    nodes: list[dict] = field(default_factory=list)
    trace: list[dict] = field(default_factory=list)
    group_errors: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def latency_pass(
    recipe: QuantRecipe,
    present: Mapping[str, Sequence[str]],
    quantize: QuantizeFn,
    speed: SpeedFn,
    min_gain: float = 0.08,
    report: SensitivityReport | None = None,
) -> QuantRecipe:
    """Backward elimination over node groups: while leaving one group in FP32 makes the INT8 model faster than the
    current one by more than ``min_gain`` (relative) in two independent measurements, leave it in FP32 (its weights
    stay int8 on disk when ``recipe.weight_only_fallback``). ``present``: ``{group: nodes}`` of the model."""
    groups = [g for g in recipe.groups if present.get(g)]
    current = recipe.with_(groups=tuple(groups))

    def without(r: QuantRecipe, g: str) -> QuantRecipe:
        wo = (*r.weight_only_groups, g) if r.weight_only_fallback else r.weight_only_groups
        return r.with_(groups=tuple(x for x in r.groups if x != g), weight_only_groups=wo)

    round_ = 0
    while groups:
        round_ += 1
        cands = {"current": quantize(current, f"lat{round_}-current")}
        for g in groups:
            cands[g] = quantize(without(current, g), f"lat{round_}-no-{g}")
        s = speed(cands)
        best = max(groups, key=lambda g: s[g])
        if s[best] > s["current"] * (1.0 + min_gain):
            # a second, head-to-head measurement guards against a lucky first one on a noisy machine
            again = speed({"current": cands["current"], best: cands[best]})
            confirmed = again[best] > again["current"] * (1.0 + min_gain / 2)
        else:
            again, confirmed = {}, False
        for g in groups:
            if report is not None:
                report.groups.append({"round": round_, "group": g, "nodes": len(present[g]),
                                      "speedup_int8": s["current"], "speedup_without_group": s[g],
                                      "decision": "FP32" if confirmed and g == best else "INT8"})  # fmt: skip
        log.info("latency round %d: INT8 %.3fx FP32; best without %s: %.3fx%s", round_, s["current"], best, s[best],
                 f" (again: {again[best]:.3f}x vs {again['current']:.3f}x)" if again else "")  # fmt: skip
        if not confirmed:
            break
        groups.remove(best)
        current = without(current, best)
        if report is not None:
            kept = "int8 weights, FP32 compute" if current.weight_only_fallback else "FP32"
            report.notes.append(f"{best}: {kept} (INT8 without it: {s[best]:.2f}x / {again[best]:.2f}x FP32 vs "
                                f"{s['current']:.2f}x / {again['current']:.2f}x with it)")  # fmt: skip
    return current


def group_errors(recipe: QuantRecipe, quantize: QuantizeFn, error: ScoreFn) -> list[dict]:
    """Accuracy cost per group: the output error of the INT8 model with all groups, then with each one left FP32."""
    rows = [{"group": "all INT8", "error": error(quantize(recipe, "grp-all"))}]
    for g in recipe.groups:
        rest = tuple(x for x in recipe.groups if x != g)
        rows.append({"group": f"{g} in FP32", "error": error(quantize(recipe.with_(groups=rest), f"grp-no-{g}"))})
    return rows


def node_errors(
    recipe: QuantRecipe, nodes: Sequence[tuple[str, str]], quantize: QuantizeFn, error: ScoreFn
) -> list[dict]:
    """For each ``(node, group)``: the output error of the INT8 model with that one node left in FP32.

    Sorted by error, smallest first (the node whose exclusion helps most comes first).
    """
    rows = []
    for i, (name, group) in enumerate(nodes):
        path = quantize(recipe.with_(nodes_to_exclude=(*recipe.nodes_to_exclude, name)), f"node{i}")
        rows.append({"node": name, "group": group, "error_without": error(path)})
    return sorted(rows, key=lambda r: r["error_without"])


def accuracy_pass(
    recipe: QuantRecipe,
    present: Mapping[str, Sequence[str]],
    quantize: QuantizeFn,
    error: ScoreFn,
    metric: ScoreFn,
    baseline: float,
    max_drop: float,
    max_nodes: int | None = None,
    report: SensitivityReport | None = None,
) -> QuantRecipe:
    """Keep the most sensitive nodes in FP32 (1, 2, 4, ... of them, by :func:`node_errors`) until
    ``baseline - metric <= max_drop``; then bisect down to the fewest that suffice."""
    report = report or SensitivityReport(recipe)
    path = quantize(recipe, "acc-0")
    value = metric(path)
    report.trace.append({"kept_fp32": 0, "metric": value, "drop": baseline - value, "error": error(path)})
    log.info("INT8 %s: metric %.4f (FP32 %.4f, drop %.4f, allowed %.4f)", recipe.name, value, baseline,
             baseline - value, max_drop)  # fmt: skip
    if baseline - value <= max_drop:
        return recipe
    quantized = [(n, g) for g in recipe.groups for n in present.get(g, ()) if n not in recipe.nodes_to_exclude]
    if max_nodes is not None and len(quantized) > max_nodes:
        report.notes.append(f"node sensitivity limited to the first {max_nodes} of {len(quantized)} quantized nodes")
        quantized = quantized[:max_nodes]
    ranked = node_errors(recipe, quantized, quantize, error)
    report.nodes = ranked
    order = [r["node"] for r in ranked]

    def with_k(k: int) -> tuple[QuantRecipe, float]:
        r = recipe.with_(nodes_to_exclude=(*recipe.nodes_to_exclude, *order[:k]))
        p = quantize(r, f"acc-{k}")
        v = metric(p)
        report.trace.append({"kept_fp32": k, "metric": v, "drop": baseline - v, "error": error(p)})
        log.info("INT8 with %d sensitive nodes in FP32: metric %.4f (drop %.4f)", k, v, baseline - v)
        return r, v

    lo, k = 0, 1
    while True:
        k = min(k, len(order))
        r, v = with_k(k)
        if baseline - v <= max_drop:
            break
        if k == len(order):
            report.notes.append(f"accuracy target missed with all {k} ranked nodes in FP32 (drop {baseline - v:.4f})")
            return r
        lo, k = k, 2 * k
    best, hi = r, k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        r, v = with_k(mid)
        if baseline - v <= max_drop:
            best, hi = r, mid
        else:
            lo = mid
    return best
