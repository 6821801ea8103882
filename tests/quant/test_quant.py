"""INT8 building blocks: ISA regimes and recipes, node groups, Q/DQ quantization, the sensitivity passes, timing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from facetx.export.onnx_export import export_onnx
from facetx.quant import sensitivity
from facetx.quant.calibration import BatchReader, MaterializedSet, sample_batches
from facetx.quant.int8 import build_int8, output_error
from facetx.quant.recipe import choose_recipe, recipe_for
from facetx.quant.static import (
    QuantRecipe,
    fp32_nodes,
    node_groups,
    preprocess,
    quantize,
    weight_only,
    weight_only_nodes,
)
from facetx.runtime import system
from facetx.runtime.sessions import OrtPredictor, make_session
from facetx.runtime.tables import metric_columns, write_csv, write_markdown
from facetx.runtime.timing import paired_ratio, time_interleaved


class _Net(nn.Module):
    """Dense conv, depthwise conv, a weight MatMul and an activation x activation MatMul (attention-like)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=4, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.fc = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        t = self.dw(torch.relu(self.conv(x))).flatten(2).transpose(1, 2)  # [B, 16*16... tokens, 16]
        q = self.fc(t)
        a = torch.softmax(q @ t.transpose(1, 2) / 4.0, dim=-1)
        return ((a @ t).mean(1),)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("quant")
    torch.manual_seed(0)
    export_onnx(_Net().eval(), d / "net.onnx", ["embedding"], input_size=32, simplify=False)
    return preprocess(d / "net.onnx", d / "net.pre.onnx")


def _calib(n: int = 2, b: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random((b, 3, 32, 32), dtype=np.float32) for _ in range(n)]


@pytest.mark.parametrize(
    ("flags", "regime"),
    [({"avx2", "fma"}, "avx2"), ({"avx2", "avx512f", "avx512bw"}, "avx512"),
     ({"avx2", "avx512f", "avx512_vnni"}, "vnni"), ({"avx2", "avx_vnni"}, "vnni"), ({"avx512_vnni", "amx_int8"}, "amx"),
     ({"asimd", "asimddp"}, "arm_dotprod"), (set(), "generic")],
)  # fmt: skip
def test_isa_regime_from_flags(flags: set[str], regime: str) -> None:
    assert system.isa_regime(frozenset(flags)) == regime


# /proc/cpuinfo excerpts of real machines (one processor block each, trimmed to the lines the parser could read)
AMD_EPYC_ZEN2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht \
syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid pni pclmulqdq \
ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy abm sse4a \
misalignsse 3dnowprefetch topoext ssbd ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 rdseed adx smap \
clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero arat npt nrip_save umip rdpid
bugs\t\t: sysret_ss_attrs spectre_v1 spectre_v2 spec_store_bypass retbleed smt_rsb

processor\t: 1
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 avx fma avx2
"""
INTEL_SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht \
syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid tsc_known_freq pni pclmulqdq \
ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm \
3dnowprefetch ssbd ibrs ibpb stibp ibrs_enhanced fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm \
avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec \
xgetbv1 xsaves avx_vnni avx512_bf16 arat avx512vbmi umip pku ospke waitpkg avx512_vbmi2 gfni vaes vpclmulqdq \
avx512_vnni avx512_bitalg avx512_vpopcntdq la57 rdpid cldemote movdiri movdir64b fsrm md_clear serialize tsxldtrk \
amx_bf16 avx512_fp16 amx_tile amx_int8 arch_capabilities
vmx flags\t: vnmi preemption_timer posted_intr invvpid ept_x_only ept_ad flexpriority apicv tsc_offset vtpr mtf
"""
INTEL_CASCADE_LAKE = """model name\t: Intel(R) Xeon(R) CPU @ 2.80GHz
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni
"""
INTEL_SKYLAKE_SP = """model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl
"""
ARM_GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop \
sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer\t: 0x41
CPU architecture: 8
"""


@pytest.mark.parametrize(
    ("cpuinfo", "model", "isa", "regime"),
    [
        (AMD_EPYC_ZEN2, "AMD EPYC 7B12", ["avx2", "fma"], "avx2"),
        (INTEL_SAPPHIRE_RAPIDS, "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
         ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16"],
         "amx"),
        (INTEL_CASCADE_LAKE, "Intel(R) Xeon(R) CPU @ 2.80GHz", ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"],
         "vnni"),
        (INTEL_SKYLAKE_SP, "Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz", ["avx2", "fma", "avx512f", "avx512bw"],
         "avx512"),
        (ARM_GRAVITON3, None, ["asimddp", "i8mm"], "arm_dotprod"),
        ("model name\t: QEMU Virtual CPU\nflags\t\t: fpu sse sse2\n", "QEMU Virtual CPU", [], "generic"),
        ("", None, [], "generic"),
    ],
)  # fmt: skip
def test_cpuinfo_text_gives_the_isa_flags_and_regime(cpuinfo: str, model: str | None, isa: list[str],
                                                     regime: str) -> None:  # fmt: skip
    flags = system.parse_cpu_flags(cpuinfo)
    assert system.parse_cpu_model(cpuinfo) == model
    assert system.isa_flags(flags) == isa  # exactly these, in ISA_FLAGS order
    assert system.isa_regime(flags) == regime


@pytest.fixture
def fake_cpuinfo(monkeypatch: pytest.MonkeyPatch):
    """Make the machine-reading functions see a given /proc/cpuinfo text (their caches cleared on both sides)."""

    def use(text: str) -> None:
        monkeypatch.setattr(system, "_read_cpuinfo", lambda: text)
        system.cpu_flags.cache_clear()
        system.cpu_model.cache_clear()

    yield use
    system.cpu_flags.cache_clear()
    system.cpu_model.cache_clear()


def test_auto_recipe_and_summary_follow_the_machines_cpuinfo(fake_cpuinfo) -> None:
    fake_cpuinfo(AMD_EPYC_ZEN2)  # AVX2 only: INT8 GEMMs emulate the dot product
    amd = choose_recipe("auto")
    assert amd.name == "avx2" and amd.reduce_range
    assert set(amd.groups) == {"Conv", "MatMul/weight", "Gemm"}
    s = system.system_summary()
    assert (s["cpu"], s["isa_flags"], s["isa_regime"]) == ("AMD EPYC 7B12", ["avx2", "fma"], "avx2")
    fake_cpuinfo(INTEL_SAPPHIRE_RAPIDS)  # AMX: every compute group, full 8-bit range
    intel = choose_recipe("auto")
    assert intel.name == "amx" and not intel.reduce_range
    assert {"Conv/depthwise", "MatMul/activation"} <= set(intel.groups)
    assert system.system_summary()["cpu"] == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"


def test_recipes_follow_the_isa() -> None:
    no_vnni, vnni, trt = recipe_for("avx2"), recipe_for("vnni"), recipe_for("tensorrt")
    assert no_vnni.reduce_range and "Conv/depthwise" not in no_vnni.groups and "MatMul/activation" not in no_vnni.groups
    assert not vnni.reduce_range and "Conv/depthwise" in vnni.groups
    assert trt.symmetric_activations and trt.activation_type == "int8"
    r = choose_recipe("avx2", per_channel=False, groups=["Conv"], nodes_to_exclude=["n1"])
    assert (r.per_channel, r.groups, r.nodes_to_exclude) == (False, ("Conv",), ("n1",))
    with pytest.raises(ValueError, match="quant.recipe"):
        recipe_for("sse2")
    with pytest.raises(ValueError, match="quant.groups"):
        choose_recipe("vnni", groups=["Softmax"])
    with pytest.raises(ValueError, match="activation_type"):
        QuantRecipe(name="x", activation_type="int4")


def test_node_groups_tell_depthwise_and_activation_matmuls_apart(small_model: Path) -> None:
    groups = node_groups(onnx.load(str(small_model)))
    assert len(groups["Conv"]) == 1 and len(groups["Conv/depthwise"]) == 1
    assert len(groups["MatMul/activation"]) == 2
    assert len(groups.get("MatMul/weight", [])) + len(groups.get("Gemm", [])) == 1


def test_quantize_keeps_excluded_groups_fp32(small_model: Path, tmp_path: Path) -> None:
    recipe = recipe_for("vnni").with_(groups=("Conv", "MatMul/weight", "Gemm"))
    out = quantize(small_model, tmp_path / "q.onnx", recipe, tmp_path / "cal", BatchReader(_calib()))
    q = onnx.load(str(out))
    onnx.checker.check_model(q, full_check=True)
    stayed = fp32_nodes(q, onnx.load(str(small_model)))
    assert set(stayed) == {"Conv/depthwise", "MatMul/activation"}
    assert any(n.op_type == "DequantizeLinear" for n in q.graph.node)
    assert list((tmp_path / "cal").glob("calibration-minmax-*.json"))  # cached: no reader needed the second time
    quantize(small_model, tmp_path / "q2.onnx", recipe.with_(groups=("Conv",)), tmp_path / "cal")
    x = _calib(1, 3)[0]
    ref = make_session(small_model).run(None, {"image": x})
    got = make_session(out).run(None, {"image": x})
    assert output_error(ref, got) < 0.2


def test_weight_only_nodes_store_int8_and_compute_fp32(small_model: Path, tmp_path: Path) -> None:
    model = onnx.load(str(small_model))
    dense = node_groups(model)["Conv"] + node_groups(model)["Conv/depthwise"]
    q, done = weight_only(onnx.load(str(small_model)), dense)
    assert sorted(done) == sorted(dense) and sorted(weight_only_nodes(q)) == sorted(dense)
    onnx.checker.check_model(q, full_check=True)
    onnx.save(q, str(tmp_path / "wo.onnx"))
    assert (tmp_path / "wo.onnx").stat().st_size < small_model.stat().st_size
    assert set(fp32_nodes(q, model)) == set(node_groups(model))  # weight-only still computes in FP32
    x = _calib(1, 2)[0]
    ref, got = (
        make_session(small_model).run(None, {"image": x}),
        make_session(tmp_path / "wo.onnx").run(None, {"image": x}),
    )
    assert output_error(ref, got) < 0.05
    recipe = recipe_for("vnni").with_(groups=("Conv",), weight_only_groups=("Conv/depthwise",))
    out = onnx.load(str(quantize(small_model, tmp_path / "q.onnx", recipe, tmp_path / "cal", BatchReader(_calib()))))
    assert weight_only_nodes(out) == node_groups(model)["Conv/depthwise"]


def test_latency_pass_drops_the_group_that_slows_int8_down(tmp_path: Path) -> None:
    present = {"Conv": ["c"], "Conv/depthwise": ["d"], "Gemm": ["g"]}
    cost = {"Conv": 0.7, "Conv/depthwise": 1.3, "Gemm": 0.9}  # relative time of each group in INT8 vs FP32

    def quant(recipe: QuantRecipe, tag: str) -> Path:
        return tmp_path / ("+".join(sorted(recipe.groups)) or "none")

    def speed(paths: dict[str, Path]) -> dict[str, float]:
        groups = {n: [g for g in p.name.split("+") if g in cost] for n, p in paths.items()}
        return {n: 3.0 / (sum(cost[g] for g in gs) + 3 - len(gs)) for n, gs in groups.items()}

    report = sensitivity.SensitivityReport(recipe_for("vnni"))
    chosen = sensitivity.latency_pass(recipe_for("vnni"), present, quant, speed, min_gain=0.03, report=report)
    assert set(chosen.groups) == {"Conv", "Gemm"} and chosen.weight_only_groups == ("Conv/depthwise",)
    assert any("Conv/depthwise" in n for n in report.notes)
    assert [r["decision"] for r in report.groups if r["group"] == "Conv/depthwise"][0] == "FP32"


def test_accuracy_pass_keeps_the_fewest_sensitive_nodes_fp32(tmp_path: Path) -> None:
    present = {"Gemm": [f"n{i}" for i in range(10)]}
    bad = {"n3": 0.02, "n7": 0.01, "n5": 0.004}  # accuracy each node costs in INT8

    def quant(recipe: QuantRecipe, tag: str) -> Path:
        return tmp_path / ("x" + "+".join(sorted(recipe.nodes_to_exclude)))

    def lost(p: Path) -> float:
        kept = set(p.name[1:].split("+"))
        return sum(v for k, v in bad.items() if k not in kept)

    recipe = recipe_for("vnni").with_(groups=("Gemm",))
    report = sensitivity.SensitivityReport(recipe)
    chosen = sensitivity.accuracy_pass(recipe, present, quant, error=lost, metric=lambda p: 0.9 - lost(p),
                                       baseline=0.9, max_drop=0.005, report=report)  # fmt: skip
    assert set(chosen.nodes_to_exclude) == {"n3", "n7"}
    assert report.nodes[0]["node"] == "n3" and report.trace[0]["kept_fp32"] == 0
    assert sensitivity.accuracy_pass(recipe, present, quant, lost, lambda p: 0.9, 0.9, 0.005) == recipe  # nothing to do


def test_build_int8_end_to_end(small_model: Path, tmp_path: Path) -> None:
    res = build_int8(small_model, tmp_path / "m.int8.onnx", tmp_path / "work", _calib(), _calib(1, 4)[0],
                     recipe_for("vnni"), threads=1, latency_runs=2, metadata={"facetx.precision": "int8"})  # fmt: skip
    model = onnx.load(str(res.path))
    assert {p.key: p.value for p in model.metadata_props}["facetx.precision"] == "int8"
    assert res.speedup_vs_fp32 is not None and res.speedup_vs_fp32 > 0
    assert set(res.recipe.groups) <= set(res.groups)
    out = OrtPredictor(make_session(res.path))(torch.rand(2, 3, 32, 32))
    assert out["embedding"].shape == (2, 16)


def test_calibration_reader_and_materialized_set() -> None:
    reader = BatchReader(_calib(3, 4), fixed_batch=5)
    assert [b["image"].shape[0] for b in iter(reader.get_next, None)] == [5, 5]
    reader.rewind()
    assert reader.get_next() is not None

    class DS(torch.utils.data.Dataset):
        name, pairs = "s", torch.tensor([[0, 1, 1]])

        def __len__(self) -> int:
            return 6

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            img = torch.full((3, 4, 4), i / 255.0)
            return {"image": img, "index": torch.tensor(i)}

    m = MaterializedSet(DS(), limit=4)
    assert len(m) == 4 and m.name == "s" and torch.equal(m.pairs, DS.pairs)
    assert torch.equal(m[3]["image"], DS()[3]["image"]) and m.images.dtype == torch.uint8
    batches = sample_batches(DS(), batch_size=4, num_batches=3, seed=0)
    assert [len(b) for b in batches] == [4, 2]
    with pytest.raises(ValueError, match="batch_size"):
        sample_batches(DS(), 0, 1)


def test_interleaved_timing_and_paired_ratio() -> None:
    calls = {"a": 0, "b": 0}

    def fn(name: str):
        return lambda: calls.__setitem__(name, calls[name] + 1)

    timings, samples = time_interleaved({"a": fn("a"), "b": fn("b")}, batch=4, warmup=2, runs=6, block=3)
    assert samples["a"].shape == (2, 3) and timings["a"].runs == 6 and timings["a"].images_per_s > 0
    assert calls["a"] == calls["b"] == 2 + 2 + 6  # warm-up, one settling call per block, timed runs
    assert paired_ratio(np.array([[2.0, 2.0], [4.0, 4.0]]), np.array([[1.0, 1.0], [1.0, 1.0]])) == 3.0


def test_sysinfo_and_table(tmp_path: Path) -> None:
    s = system.system_summary()
    assert s["isa_regime"] in system.REGIMES and "onnxruntime" in s["versions"] and s["git_commit"]
    m = {"recognition/acc": 0.9, "recognition/acc_std": 0.01, "recognition/tar@far=1e-3": 0.5, "landmarks/nme": 0.1,
         "spoof/apcer": 0.1, "spoof/acer": 0.2}  # fmt: skip
    assert metric_columns(m) == ["recognition/acc", "recognition/tar@far=1e-3", "landmarks/nme", "spoof/acer"]
    rows = [{"model": "m", "runtime": "onnxruntime", "precision": "int8", "batch": 1, "p50_ms": 1.5,
             "isa_flags": "avx2", "recognition/acc": 0.9}]  # fmt: skip
    write_csv(rows, tmp_path / "b.csv")
    write_markdown(rows, tmp_path / "b.md", "t", {"cpu": "x"}, ["note"])
    assert "recognition/acc" in (tmp_path / "b.csv").read_text().splitlines()[0]
    assert "| m | onnxruntime | int8 |" in (tmp_path / "b.md").read_text()
