"""facetx.quant."""
