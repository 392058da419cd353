"""Embedded diffusion models: exact-score Gaussian mixtures that run anywhere in milliseconds."""
