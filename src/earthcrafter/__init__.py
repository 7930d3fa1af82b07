"""earthcrafter: geographic-scale 3D Earth generation by dual-sparse latent diffusion."""

__version__ = "0.1.0"
