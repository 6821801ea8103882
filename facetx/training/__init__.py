"""facetx.training."""
