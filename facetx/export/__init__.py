"""facetx.export."""
