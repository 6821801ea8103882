"""What a benchmark row must state: CPU model and ISA flags (the INT8 regime), library versions, git commit, load."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

#: ISA flags that decide which INT8 kernels a CPU has (names as in /proc/cpuinfo)
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
#: regimes, best first: which INT8 path the CPU offers
REGIMES = ("amx", "vnni", "arm_dotprod", "avx512", "avx2", "generic")
LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxslim", "timm", "numpy", "tensorrt")


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """Feature flags of the first CPU in ``/proc/cpuinfo`` text (x86 ``flags``, ARM ``Features``)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def parse_cpu_model(cpuinfo: str) -> str | None:
    """The first CPU's model name in ``/proc/cpuinfo`` text (x86 ``model name``, ARM ``Model``/``Hardware``)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware"):
            return value.strip()
    return None


def _read_cpuinfo() -> str:
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.is_file() else ""


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """Feature flags of this machine's first CPU (:func:`parse_cpu_flags` of /proc/cpuinfo); empty elsewhere."""
    return parse_cpu_flags(_read_cpuinfo())


@lru_cache(maxsize=1)
def cpu_model() -> str:
    return parse_cpu_model(_read_cpuinfo()) or platform.processor() or platform.machine()


def isa_flags(flags: frozenset[str] | None = None) -> list[str]:
    """The ISA flags of :data:`ISA_FLAGS` this CPU has (ARM: ``asimddp`` dot product, ``i8mm``)."""
    flags = cpu_flags() if flags is None else flags
    return [f for f in (*ISA_FLAGS, "asimddp", "i8mm") if f in flags]


def isa_regime(flags: frozenset[str] | None = None) -> str:
    """Which INT8 regime the CPU is in (one of :data:`REGIMES`).

    ``amx``/``vnni``: 8-bit dot-product instructions, INT8 GEMMs run ~2-4x FP32; ``arm_dotprod``: the same on ARM;
    ``avx512``/``avx2`` without VNNI: INT8 GEMMs emulate the dot product (``vpmaddubsw``) and barely beat FP32.
    """
    flags = cpu_flags() if flags is None else flags
    if "amx_int8" in flags:
        return "amx"
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "vnni"
    if "asimddp" in flags:
        return "arm_dotprod"
    if "avx512bw" in flags or "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "generic"


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed versions of ``names`` (missing ones are left out)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(repo: str | Path | None = None) -> str:
    """The checkout's commit (``+dirty`` when tracked files changed); ``unknown`` outside a git checkout."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def load_average() -> float:
    """1-minute load average (0 where the OS has none): latencies measured under load are noisy."""
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return 0.0


def system_summary() -> dict[str, object]:
    """One dict for reports: hardware, ISA flags and regime, cores, library versions, commit, load."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 0,
        "isa_flags": isa_flags(),
        "isa_regime": isa_regime(),
        "python": platform.python_version(),
        "versions": library_versions(),
        "git_commit": git_commit(),
        "load_average": load_average(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ},
    }
