"""Proxy evaluation: datasets, the trainer, zero-cost scores, and what one trial of a search runs."""
