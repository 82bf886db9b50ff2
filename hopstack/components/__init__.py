"""hopstack components, one module per stage family (see DESIGN.md, Layout)."""
