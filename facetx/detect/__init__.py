"""facetx.detect."""
