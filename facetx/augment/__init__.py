"""facetx.augment."""
