"""The search: an engine that proposes and records genomes on an Optuna study, and the drivers that train them."""
