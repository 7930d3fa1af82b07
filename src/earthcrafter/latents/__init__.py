"""Latent caching: every voxel tile encoded once by the trained VAEs, for the flow models."""
