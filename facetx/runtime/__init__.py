"""facetx.runtime: the leaf layer every other package may use (it imports no facetx package but facetx.errors).

``timing``: latency of torch / runner callables, parameter and FLOP counts; ``system``: CPU model, ISA flags and INT8
regime, library versions, git commit, load; ``sessions``: the :class:`~facetx.runtime.sessions.Runner` interface,
ONNX Runtime sessions, the torch-like predictor and ONNX metadata; ``openvino``, ``litert``, ``coreml``: the other
runtimes' runners (their packages imported only when used; Core ML's is a MIL reference interpreter for Linux);
``tables``: the benchmark table as CSV and Markdown.
"""
