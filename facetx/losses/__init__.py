"""facetx.losses."""
