"""hopstack components, one module per stage family (see docs/concepts/layers.md)."""
