"""A stand-in for the plan's scripts in the tables tests: ``python -m tests.bench.fake_run KIND DIR [--fail]``
writes what that kind of run leaves (compare.json, benchmark.csv) into DIR and appends KIND to DIR/../calls.txt."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    kind, out = argv[0], Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    with open(out.parent / "calls.txt", "a") as f:
        f.write(f"{out.name}\n")
    if "--fail" in argv:
        print("fake_run: failing as asked", file=sys.stderr)
        return 3
    if kind == "compare":
        rows = [{"label": "teacher", "run": "t", "model": "teacher", "params_m": 24.5, "gflops": 2.76, "eager_ms": 60.0,
                 "ort_ms": 30.0, "speedup": 1.0, "metrics": {"test/recognition/acc": 0.9}},
                {"label": "student", "run": "s", "model": "nano", "params_m": 4.2, "gflops": 0.17, "eager_ms": 15.0,
                 "ort_ms": 5.0, "speedup": 6.0, "metrics": {"test/recognition/acc": 0.88}}]  # fmt: skip
        (out / "compare.json").write_text(json.dumps({"split": "test", "rows": rows}))
    elif kind == "export":
        (out / "benchmark.csv").write_text(
            "model,runtime,precision,graph,batch,size_mb,p50_ms,speed_vs_ort_fp32,best,recognition/acc\n"
            "nano,onnxruntime,fp32,dynamic,1,17.0,3.0,1.0,,0.88\nnano,tflite,int8,xnnpack,1,5.3,1.1,2.7,yes,0.879\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
