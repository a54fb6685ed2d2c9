"""gas: generate fast vision transformers by constrained architecture search."""
