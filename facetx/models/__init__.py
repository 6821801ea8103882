"""facetx.models."""
