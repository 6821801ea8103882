"""The real-time face pipeline: video -> BlazeFace -> aligned crops -> the exported student -> tracks -> outputs.

``python -m facetx.pipeline source=VIDEO model=OUT/model.int8.onnx``, or from Python::

    from facetx.pipeline import FacePipeline
    pipe = FacePipeline.from_config(["model=OUT/model.int8.onnx"])
    faces = pipe.get(rgb_frame)
"""

from facetx.pipeline.contracts import FaceResult, Frame, FrameResult
from facetx.pipeline.pipeline import FacePipeline

__all__ = ["FacePipeline", "FaceResult", "Frame", "FrameResult"]
