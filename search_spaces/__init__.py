"""Search spaces: one module per space."""
