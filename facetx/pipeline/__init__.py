"""facetx.pipeline."""
