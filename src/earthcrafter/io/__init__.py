"""Readers and writers. Importers of user data load lazily (``import_source``, ``import_to_scenes``),
so ``earthcrafter.io.scene`` and friends stay light to import."""


def __getattr__(name: str):
    if name in ("import_source", "import_to_scenes", "write_imported_scene", "DataImportError"):
        from earthcrafter.io import import_common, imported_scene, sources

        for module in (sources, imported_scene, import_common):
            if hasattr(module, name):
                return getattr(module, name)
    raise AttributeError(f"module 'earthcrafter.io' has no attribute {name!r}")
