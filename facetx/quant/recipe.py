"""CPU-ISA-aware INT8 recipes: which data types and which node groups to quantize, from what the machine reports.

- ``amx`` / ``vnni`` (AVX512-VNNI, AVX-VNNI, AMX): 8-bit dot products make INT8 GEMMs ~2-4x FP32; quantize every
  compute group, uint8 activations x int8 weights, full 8-bit range.
- ``arm_dotprod``: the same on ARM (SDOT/UDOT); symmetric int8 activations suit ARM kernels.
- ``avx512`` / ``avx2`` / ``generic`` (no VNNI): INT8 GEMMs emulate the dot product and barely beat FP32, depthwise
  convolutions and activation x activation MatMuls are slower in INT8; start from dense Conv/MatMul/Gemm only, with
  7-bit weights (``reduce_range``) against ``vpmaddubsw`` saturation. The latency pass removes what is still slower.
- ``tensorrt``: symmetric int8 activations and weights (TensorRT's explicit quantization needs zero points of 0).
"""

from __future__ import annotations

from collections.abc import Sequence

from facetx.errors import ConfigError
from facetx.quant.static import QuantRecipe
from facetx.runtime.system import REGIMES, isa_regime

ALL_GROUPS = ("Conv", "Conv/depthwise", "Conv/grouped", "MatMul/weight", "MatMul/activation", "Gemm")
DENSE_GROUPS = ("Conv", "MatMul/weight", "Gemm")
RECIPES = (*REGIMES, "tensorrt")


def recipe_for(name: str) -> QuantRecipe:
    """The starting recipe for an ISA regime (:data:`facetx.runtime.system.REGIMES`) or ``tensorrt``."""
    if name in ("amx", "vnni"):
        return QuantRecipe(
            name=name, activation_type="uint8", weight_type="int8", reduce_range=False, groups=ALL_GROUPS
        )
    if name == "arm_dotprod":
        return QuantRecipe(name=name, activation_type="int8", weight_type="int8", reduce_range=False, groups=ALL_GROUPS)
    if name in ("avx512", "avx2", "generic"):
        return QuantRecipe(
            name=name, activation_type="uint8", weight_type="int8", reduce_range=True, groups=DENSE_GROUPS
        )
    if name == "tensorrt":
        return QuantRecipe(name=name, activation_type="int8", weight_type="int8", reduce_range=False, groups=ALL_GROUPS,
                           symmetric_activations=True)  # fmt: skip
    raise ConfigError(f"quant.recipe must be 'auto' or one of {RECIPES}, got {name!r}")


def choose_recipe(
    recipe: str = "auto",
    per_channel: bool | None = None,
    reduce_range: bool | None = None,
    activation_type: str | None = None,
    groups: Sequence[str] | None = None,
    nodes_to_exclude: Sequence[str] = (),
    calibrate_method: str = "minmax",
    weight_only_fallback: bool = True,
) -> QuantRecipe:
    """``recipe="auto"``: from this CPU's ISA flags; any other argument that is not ``None`` overrides the recipe."""
    base = recipe_for(isa_regime() if recipe == "auto" else recipe)
    changes: dict[str, object] = {"calibrate_method": calibrate_method, "nodes_to_exclude": tuple(nodes_to_exclude),
                                  "weight_only_fallback": bool(weight_only_fallback)}  # fmt: skip
    if per_channel is not None:
        changes["per_channel"] = bool(per_channel)
    if reduce_range is not None:
        changes["reduce_range"] = bool(reduce_range)
    if activation_type is not None:
        changes["activation_type"] = activation_type
    if groups is not None:
        bad = set(groups) - set(ALL_GROUPS)
        if bad:
            raise ConfigError(f"quant.groups: unknown groups {sorted(bad)}; expected a subset of {ALL_GROUPS}")
        changes["groups"] = tuple(groups)
    return base.with_(**changes)
