"""The textured test tile lives in the library (the dry run uses it too); the names the tests use."""

from earthcrafter.training.synthetic import heightfield_mesh, sample_mesh, textured_tile, write_textured_tiles

make_tile, write_dataset = textured_tile, write_textured_tiles

__all__ = ["heightfield_mesh", "make_tile", "sample_mesh", "write_dataset"]
