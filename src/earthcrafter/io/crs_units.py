"""Linear units of a LAS file's coordinates, read from its CRS records, never assumed.

Two sources exist in a LAS header and both are read:

- the parsed CRS (OGC WKT VLR, or a GeoKey directory that names an EPSG CRS), via pyproj:
  the unit and its metres-per-unit factor of the horizontal axes and, for a compound
  CRS, of the vertical axis;
- the raw GeoKeys: ``ProjLinearUnitsGeoKey`` (3076, an EPSG unit code, or user-defined
  with ``ProjLinearUnitSizeGeoKey`` 3077 in metres) and ``VerticalUnitsGeoKey`` (4099).
  User-defined CRSs (``ProjectedCSTypeGeoKey`` = 32767) are only described this way.

If the two disagree the file is ambiguous and import fails (pass ``units=`` to decide).
A geographic CRS (degrees) is refused whatever the arguments: a metric scene needs projected
coordinates.
A horizontal unit but no vertical one is common (2D CRS); z is then taken in the
horizontal unit, which is the LAS convention in practice, and the choice is recorded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

GT_MODEL_TYPE_KEY = 1024
MODEL_TYPE_GEOGRAPHIC = 2
PROJ_LINEAR_UNITS_KEY = 3076
PROJ_LINEAR_UNIT_SIZE_KEY = 3077
VERTICAL_UNITS_KEY = 4099
USER_DEFINED = 32767
GEO_DOUBLE_PARAMS_TAG = 34736


@dataclass(frozen=True)
class LinearUnit:
    name: str
    metres: float  # metres per unit
    source: str  # where it was read: "crs", "geokeys", "argument", "assumed: ..."

    def as_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=1)
def _epsg_linear_units() -> dict[int, tuple[str, float]]:
    from pyproj.database import get_units_map

    units = get_units_map(auth_name="EPSG", category="linear")
    return {int(u.code): (u.name, float(u.conv_factor)) for u in units.values() if u.code.isdigit()}


def unit_from_epsg_code(code: int, source: str) -> LinearUnit | None:
    entry = _epsg_linear_units().get(int(code))
    return None if entry is None else LinearUnit(entry[0], entry[1], source)


def units_from_crs(crs) -> tuple[LinearUnit | None, LinearUnit | None, str | None]:
    """(horizontal, vertical, problem) units of a pyproj CRS.

    ``problem`` is set when the CRS cannot serve a metric scene: geographic (angular)
    coordinates, for one.
    """
    if crs is None:
        return None, None, None
    horizontal = vertical = None
    parts = crs.sub_crs_list if crs.is_compound else [crs]
    for part in parts:
        if part.is_vertical:
            axis = part.axis_info[0]
            vertical = LinearUnit(axis.unit_name, float(axis.unit_conversion_factor), "crs")
            continue
        if part.is_geographic and not part.is_projected:
            return None, vertical, f"CRS {part.name!r} is geographic (angular units); reproject to a projected CRS"
        axes = [a for a in part.axis_info if a.direction not in ("up", "down")]
        factors = {round(float(a.unit_conversion_factor), 12) for a in axes}
        if len(factors) != 1:
            return None, vertical, f"CRS {part.name!r} has horizontal axes in different units"
        horizontal = LinearUnit(axes[0].unit_name, float(axes[0].unit_conversion_factor), "crs")
        ups = [a for a in part.axis_info if a.direction in ("up", "down")]
        if ups:  # a 3D projected CRS carries its own height unit
            vertical = LinearUnit(ups[0].unit_name, float(ups[0].unit_conversion_factor), "crs")
    return horizontal, vertical, None


def geographic_crs(crs, header) -> str | None:
    """Why the coordinates are angular (a geographic CRS), or None: read from the parsed CRS and
    from ``GTModelTypeGeoKey`` (2 = geographic) of the raw GeoKeys."""
    parts = [] if crs is None else (crs.sub_crs_list if crs.is_compound else [crs])
    for part in parts:
        if part.is_geographic and not part.is_projected:
            return f"CRS {part.name!r} is geographic (angular units, degrees)"
    keys = _geokeys(header)
    model = keys.get(GT_MODEL_TYPE_KEY)
    if model is not None and model.tiff_tag_location == 0 and model.value_offset == MODEL_TYPE_GEOGRAPHIC:
        return "the GeoKeys say the CRS is geographic (GTModelTypeGeoKey = 2: angular units, degrees)"
    return None


def _geokeys(header) -> dict:
    directories = header.vlrs.get("GeoKeyDirectoryVlr")
    return {k.id: k for k in directories[0].geo_keys} if directories else {}


def units_from_geokeys(header) -> tuple[LinearUnit | None, LinearUnit | None]:
    """(horizontal, vertical) units from the raw GeoKey directory of a laspy header, if any."""
    keys = _geokeys(header)
    if not keys:
        return None, None
    doubles = header.vlrs.get("GeoDoubleParamsVlr")
    doubles = list(doubles[0].doubles) if doubles else []

    def unit(key_id: int, size_key_id: int | None) -> LinearUnit | None:
        key = keys.get(key_id)
        if key is None or key.tiff_tag_location != 0:
            return None
        if key.value_offset == USER_DEFINED and size_key_id is not None and size_key_id in keys:
            size = keys[size_key_id]
            if size.tiff_tag_location == GEO_DOUBLE_PARAMS_TAG and size.value_offset < len(doubles):
                d = doubles[size.value_offset]
                metres = float(getattr(d, "value", d))  # laspy holds ctypes doubles
                return LinearUnit("user-defined", metres, "geokeys")
            return None
        return unit_from_epsg_code(key.value_offset, "geokeys")

    return unit(PROJ_LINEAR_UNITS_KEY, PROJ_LINEAR_UNIT_SIZE_KEY), unit(VERTICAL_UNITS_KEY, None)


def same_unit(a: LinearUnit, b: LinearUnit) -> bool:
    return bool(np.isclose(a.metres, b.metres, rtol=1e-9, atol=0))
