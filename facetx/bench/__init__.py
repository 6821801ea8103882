"""facetx.bench."""
