"""TensorRT 10 engines from the exported ONNX graphs: FP16 from ``model.onnx``, INT8 from a Q/DQ model (explicit
quantization, no calibrator), one optimization profile over the dynamic batch; timing with CUDA events.

Buffers and streams come from torch.cuda (no pycuda). Everything here imports ``tensorrt`` lazily: call
:func:`unavailable_reason` first, it says in one line why TensorRT cannot run on this machine (or ``None``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from packaging.version import Version

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "int8")


def unavailable_reason() -> str | None:
    """``None`` when TensorRT >= 10 and a CUDA device are usable, else a one-line reason."""
    try:
        import tensorrt as trt
    except ImportError:
        return "TensorRT skipped: the tensorrt Python package is not installed (NVIDIA's TensorRT 10 wheels)"
    except Exception as e:  # noqa: BLE001  (a broken install raises OSError/RuntimeError from its shared libraries)
        return f"TensorRT skipped: importing tensorrt failed ({type(e).__name__}: {e})"
    if Version(trt.__version__).major < 10:
        return f"TensorRT skipped: tensorrt {trt.__version__} is installed, the exporter needs TensorRT >= 10"
    if not hasattr(trt.BuilderFlag, "FP16"):
        return f"TensorRT skipped: tensorrt {trt.__version__} has no FP16 builder flag (TensorRT 11+ is strongly typed)"
    if not torch.cuda.is_available():
        return "TensorRT skipped: no CUDA device is available to torch"
    return None


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    precision: str,
    input_name: str = "image",
    input_chw: Sequence[int] = (3, 112, 112),
    batches: tuple[int, int, int] = (1, 1, 64),
    workspace_gib: float = 2.0,
) -> Path:
    """Parse ``onnx_path`` and build a serialized engine into ``engine_path``.

    ``precision``: ``fp16`` (FP32 graph, FP16 kernels allowed) or ``int8`` (a Q/DQ graph: TensorRT follows its
    explicit quantization; FP16 is allowed for the layers left in float). ``batches``: (min, opt, max) of the
    optimization profile; a fixed-batch graph needs min = opt = max = its batch.
    """
    import tensorrt as trt

    if precision not in PRECISIONS:
        raise ValueError(f"TensorRT precision must be one of {PRECISIONS}, got {precision!r}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        # Q/DQ nodes select explicit quantization; the INT8 flag lets the (weakly typed) network use INT8 kernels
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    lo, opt, hi = batches
    chw = tuple(int(d) for d in input_chw)
    profile.set_shape(input_name, (lo, *chw), (opt, *chw), (hi, *chw))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT failed to build the {precision} engine (see the log above)")
    engine_path = Path(engine_path)
    engine_path.write_bytes(bytes(serialized))
    log.info("built %s (%s, batch profile %s)", engine_path, precision, batches)
    return engine_path


class TrtRunner:
    """Runs a serialized engine on torch CUDA tensors: ``runner(images [B, 3, H, W]) -> {output name: tensor}``."""

    def __init__(self, engine_path: str | Path) -> None:
        import tensorrt as trt

        self.trt = trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{engine_path}: could not deserialize the TensorRT engine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.inputs) != 1:
            raise RuntimeError(f"{engine_path}: expected one input tensor, got {self.inputs}")
        self.stream = torch.cuda.Stream()
        self._bound: tuple[int, ...] | None = None
        self._out: dict[str, torch.Tensor] = {}
        self._in: torch.Tensor | None = None

    def _torch_dtype(self, name: str) -> torch.dtype:
        t = self.trt.DataType
        table = {
            t.FLOAT: torch.float32,
            t.HALF: torch.float16,
            t.INT32: torch.int32,
            t.INT8: torch.int8,
            t.BOOL: torch.bool,
        }
        return table[self.engine.get_tensor_dtype(name)]

    def bind(self, images: torch.Tensor) -> None:
        """Copy ``images`` into the input buffer; (re)allocate buffers and addresses when the shape changes."""
        shape = tuple(images.shape)
        if shape != self._bound:
            name = self.inputs[0]
            self._in = torch.empty(shape, dtype=self._torch_dtype(name), device="cuda")
            self.context.set_input_shape(name, shape)
            self.context.set_tensor_address(name, self._in.data_ptr())
            self._out = {}
            for out in self.outputs:
                dims = tuple(self.context.get_tensor_shape(out))
                self._out[out] = torch.empty(dims, dtype=self._torch_dtype(out), device="cuda")
                self.context.set_tensor_address(out, self._out[out].data_ptr())
            self._bound = shape
        self._in.copy_(images, non_blocking=True)

    def launch(self) -> None:
        """Enqueue one inference on the runner's stream (asynchronous)."""
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.cuda.stream(self.stream):
            self.bind(images.to("cuda", non_blocking=True))
            self.launch()
        self.stream.synchronize()
        return {name: t.float().cpu() for name, t in self._out.items()}


def time_engine(runner: TrtRunner, batch: int, input_hw: int = 112, warmup: int = 20, runs: int = 200) -> list[float]:
    """Per-run GPU latencies in seconds (CUDA events around each ``execute_async_v3``, synchronized)."""
    runner.bind(torch.rand(batch, 3, input_hw, input_hw, device="cuda"))
    torch.cuda.synchronize()  # the input copy ran on the current stream, the engine runs on the runner's
    for _ in range(warmup):
        runner.launch()
    runner.stream.synchronize()
    times = []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(runs):
        start.record(runner.stream)
        runner.launch()
        end.record(runner.stream)
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return times
