"""Model families gas builds; each module imports only torch and the standard library."""
