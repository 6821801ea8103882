"""facetx.runtime: the leaf layer every other package may use (it imports no facetx package but facetx.errors).

``timing``: latency of torch / ONNX Runtime callables, parameter and FLOP counts; ``system``: CPU model, ISA flags and
INT8 regime, library versions, git commit, load; ``sessions``: ONNX Runtime sessions, the torch-like predictor and
ONNX metadata; ``tables``: the benchmark table as CSV and Markdown.
"""
