"""facetx: real-time face transformers."""

__version__ = "0.1.0"
