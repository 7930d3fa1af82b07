"""Mesh import: PLY (colours, face classes, polygons), textured OBJ, glTF/GLB axes, bad input."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from import_helpers import write_glb
from PIL import Image
from plyfile import PlyData, PlyElement

from earthcrafter.io.import_common import INTERNATIONAL_FOOT_M, DataImportError
from earthcrafter.io.mesh_import import check_mesh, import_mesh
from earthcrafter.io.scene import read_scene, write_scene
from earthcrafter.semantics import CLASS_ID

X0, Y0 = 500_000.25, 4_000_000.75  # georeferenced-looking coordinates


def write_ply(path, vertices, polygons, colors=None, color_type="u1", face_values=None, face_key="semantic",
              xyz="f8"):
    vdtype = [("x", xyz), ("y", xyz), ("z", xyz)]
    if colors is not None:
        vdtype += [("red", color_type), ("green", color_type), ("blue", color_type)]
    verts = np.empty(len(vertices), dtype=vdtype)
    for i, k in enumerate("xyz"):
        verts[k] = np.asarray(vertices)[:, i]
    if colors is not None:
        for i, k in enumerate(("red", "green", "blue")):
            verts[k] = np.asarray(colors)[:, i]
    fdtype = [("vertex_indices", "O")] + ([(face_key, "i4")] if face_values is not None else [])
    faces = np.empty(len(polygons), dtype=fdtype)
    faces["vertex_indices"] = [np.asarray(p, dtype=np.int32) for p in polygons]
    if face_values is not None:
        faces[face_key] = face_values
    PlyData([PlyElement.describe(verts, "vertex"), PlyElement.describe(faces, "face")], text=True).write(str(path))
    return path


# one quad (road) and one triangle (tree) on a slope
VERTS = np.array([[X0, Y0, 10.0], [X0 + 4, Y0, 10.0], [X0 + 4, Y0 + 3, 12.0], [X0, Y0 + 3, 12.0], [X0 + 6, Y0 + 1, 11.0]])
POLYS = [[0, 1, 2, 3], [1, 4, 2]]
COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30], [200, 100, 50]])


def test_ply_colours_classes_polygons_and_local_frame(tmp_path):
    path = write_ply(tmp_path / "Site A.ply", VERTS, POLYS, COLORS, face_values=[CLASS_ID["road"], CLASS_ID["tree"]])
    scene = import_mesh(path)
    mesh, meta = scene.mesh, scene.metadata
    assert scene.scene_id == "site_a" and meta["source"] == "mesh" and scene.points is None
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3], [1, 4, 2]])  # quad fanned from vertex 0
    np.testing.assert_array_equal(mesh.face_semantic, [CLASS_ID["road"]] * 2 + [CLASS_ID["tree"]])
    np.testing.assert_array_equal(mesh.vertex_colors, COLORS)
    origin = np.array(meta["origin"]["source_units"])
    np.testing.assert_array_equal(origin, np.floor(VERTS.min(axis=0)))
    np.testing.assert_allclose(mesh.vertices + origin, VERTS, atol=1e-9)
    assert meta["extent_m"] == [6.0, 3.0]
    assert meta["class_histogram"]["road"] == 2 and meta["class_histogram"]["tree"] == 1
    assert meta["unlabeled_faces_no_attribute"] == 0 and meta["texture_sampling"] == {"method": "vertex_colors"}
    # and it survives the scene's own writer
    back = read_scene(write_scene(tmp_path / "scenes", scene))
    np.testing.assert_array_equal(back.mesh.face_semantic, mesh.face_semantic)


def test_ply_without_class_attribute_is_unlabeled_and_counted(tmp_path):
    scene = import_mesh(write_ply(tmp_path / "m.ply", VERTS, POLYS, COLORS))
    assert (scene.mesh.face_semantic == 0).all()
    assert scene.metadata["unlabeled_faces_no_attribute"] == 3
    assert scene.metadata["class_histogram"]["unlabeled"] == 3


def test_ply_unknown_class_values(tmp_path):
    path = write_ply(tmp_path / "m.ply", VERTS, POLYS, COLORS, face_values=[40, 9], face_key="label")
    scene = import_mesh(path)
    np.testing.assert_array_equal(scene.mesh.face_semantic, [0, 0, 9])
    assert scene.metadata["unknown_class_faces"] == 2
    with pytest.raises(DataImportError, match=r"m\.ply: face class values outside 0..24: \{'40': 2\}"):
        import_mesh(path, unknown_class="error")


def test_float_colours_and_feet(tmp_path):
    path = write_ply(tmp_path / "m.ply", VERTS, POLYS, COLORS / 255.0, color_type="f4")
    scene = import_mesh(path, units="ft")
    np.testing.assert_array_equal(scene.mesh.vertex_colors, COLORS)
    np.testing.assert_allclose(scene.metadata["extent_m"], [6 * INTERNATIONAL_FOOT_M, 3 * INTERNATIONAL_FOOT_M])
    assert scene.metadata["origin"]["metres"][0] == pytest.approx(np.floor(X0) * INTERNATIONAL_FOOT_M)


def write_textured_obj(folder, size=64):
    """A unit square in z=0 with uv = (x, y); the texture encodes its own pixel position.

    red = 4 * column, green = 4 * row (row 0 = top of the image = v near 1).
    """
    cols, rows = np.meshgrid(np.arange(size), np.arange(size))
    tex = np.stack([4 * cols, 4 * rows, np.full_like(cols, 77)], axis=-1).astype(np.uint8)
    Image.fromarray(tex).save(folder / "tex.png")
    (folder / "sq.mtl").write_text("newmtl m\nmap_Kd tex.png\n")
    (folder / "sq.obj").write_text(
        "mtllib sq.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\n"
        "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nusemtl m\nf 1/1 2/2 3/3\nf 1/1 3/3 4/4\n"
    )
    return folder / "sq.obj", size


def expected_texture(uv: np.ndarray, size: int) -> np.ndarray:
    """The texture's value at uv, from its definition (bilinear between pixel centres, clamped)."""
    col = np.clip(uv[:, 0] * size - 0.5, 0, size - 1)
    row = np.clip((1 - uv[:, 1]) * size - 0.5, 0, size - 1)
    return np.stack([4 * col, 4 * row, np.full_like(col, 77)], axis=1)


def test_textured_obj_is_subdivided_and_sampled(tmp_path):
    path, size = write_textured_obj(tmp_path)
    scene = import_mesh(path, texels_per_edge=8.0)
    notes, mesh = scene.metadata["texture_sampling"], scene.mesh
    # longest edge (the diagonal) spans 64 * sqrt(2) = 90.5 texels; halving 4 times gets under 8
    # (3 times would not): 4 levels, 2 * 4^4 faces
    assert notes["method"] == "texture" and notes["subdivision_levels"] == 4 and len(mesh.faces) == 2 * 4**4
    assert notes["uncoloured_vertices"] == 0
    uv = mesh.vertices[:, :2]  # the square's uv equals its xy
    np.testing.assert_allclose(mesh.vertex_colors, expected_texture(uv, size), atol=1.0)
    # v up: the top edge (y = 1) reads the image's first rows
    top = mesh.vertices[:, 1] == 1
    assert mesh.vertex_colors[top, 1].max() <= 2


def test_texture_without_subdivision_budget(tmp_path):
    path, size = write_textured_obj(tmp_path)
    scene = import_mesh(path, max_faces=3)
    assert scene.metadata["texture_sampling"]["subdivision_levels"] == 0 and len(scene.mesh.faces) == 2
    np.testing.assert_allclose(scene.mesh.vertex_colors, expected_texture(scene.mesh.vertices[:, :2], size), atol=1.0)


def test_obj_vertex_colours(tmp_path):
    path = tmp_path / "vc.obj"
    path.write_text("v 0 0 0 1 0 0\nv 2 0 0 0 1 0\nv 0 2 1 0 0 1\nf 1 2 3\n")
    scene = import_mesh(path)
    np.testing.assert_array_equal(scene.mesh.vertex_colors, [[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    assert scene.metadata["extent_m"] == [2.0, 2.0]


def test_glb_is_y_up_and_rotated_to_z_up(tmp_path):
    # a 10 m wide, 3 m tall wall in glTF axes (y up); its top edge must end up at z = 3
    v = np.array([[0, 0, 0], [10, 0, 0], [10, 3, 0], [0, 3, 0]], dtype=np.float64)
    path = write_glb(tmp_path / "wall.glb", v, [[0, 1, 2], [0, 2, 3]], colors=np.full((4, 3), 0.5))
    scene = import_mesh(path)
    local = scene.mesh.vertices
    np.testing.assert_allclose(np.ptp(local, axis=0), [10, 0, 3])
    np.testing.assert_allclose(local[2] - local[1], [0, 0, 3])  # glTF +y -> +z
    assert (scene.mesh.vertex_colors == 128).all()
    assert scene.metadata["origin"]["units"]["up_axis"] == "y"
    flat = import_mesh(path, up_axis="z")  # the caller can overrule the spec
    np.testing.assert_allclose(np.ptp(flat.mesh.vertices, axis=0), [10, 3, 0])


def test_glb_node_transform_is_refused(tmp_path):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float64)
    path = write_glb(tmp_path / "moved.glb", v, [[0, 1, 2]], colors=np.ones((3, 3)), node={"translation": [5, 0, 0]})
    with pytest.raises(DataImportError, match=r"moved\.glb: glTF node 0 .* has a transform"):
        import_mesh(path)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("none.ply", None, "mesh file not found"),
        ("bad.ply", b"ply\nformat ascii 1.0\nelement vertex 3\nend_header\n1 2\n", "not a readable PLY mesh"),
        ("bad.obj", b"this is not a mesh\n", "not a readable mesh"),
        ("mesh.xyz", b"0 0 0\n", "unsupported mesh format"),
    ],
)
def test_unreadable_files(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataImportError, match=rf"{name.replace('.', r'[.]')}: {message}"):
        import_mesh(path)


def test_no_colour_no_faces_absurd_extent(tmp_path):
    with pytest.raises(DataImportError, match=r"plain\.ply: the mesh has neither vertex colours nor a texture"):
        import_mesh(write_ply(tmp_path / "plain.ply", VERTS, POLYS))
    with pytest.raises(DataImportError, match=r"nofaces\.ply: the mesh has no faces"):
        import_mesh(write_ply(tmp_path / "nofaces.ply", VERTS, [], COLORS))
    far = VERTS.copy()
    far[4, 0] += 150_000
    with pytest.raises(DataImportError, match=r"far\.ply: vertex coordinates span .* 100 km"):
        import_mesh(write_ply(tmp_path / "far.ply", far, POLYS, COLORS))
    degenerate = import_mesh(write_ply(tmp_path / "deg.ply", VERTS, POLYS + [[0, 0, 1]], COLORS, face_values=[3, 9, 5]))
    assert degenerate.metadata["dropped"]["degenerate_faces"] == 1 and len(degenerate.mesh.faces) == 3
    np.testing.assert_array_equal(degenerate.mesh.face_semantic, [3, 3, 9])
    with pytest.raises(DataImportError, match=r"idx\.ply: face vertex index outside"):
        import_mesh(write_ply(tmp_path / "idx.ply", VERTS, [[0, 1, 9]], COLORS))


# --------------------------------------------------------------------------- precision, options, axes

# UTM-like coordinates with millimetres: float32 is 0.25 m coarse at this northing
UTM = np.array([[500000.123, 4100000.456, 100.789], [500010.123, 4100000.456, 100.789],
                [500010.123, 4100010.456, 100.789], [500000.123, 4100010.456, 100.789],
                [500000.124, 4100000.457, 100.789], [500010.123, 4100000.6, 100.789]])  # 4, 5: float32-equal to 0, 1


def obj_lines(vertices, colors=True) -> str:
    return "".join(f"v {x:.3f} {y:.3f} {z:.3f}" + (" 0.5 0.5 0.5\n" if colors else "\n") for x, y, z in vertices)


def source_corners(scene) -> set:
    """Every face as its three corners in source coordinates (rounded to 1e-6 against float noise)."""
    v = scene.mesh.vertices + np.asarray(scene.metadata["origin"]["metres"])
    return {tuple(map(tuple, np.round(v[f], 6))) for f in scene.mesh.faces}


def test_obj_keeps_full_precision_at_utm_coordinates(tmp_path, caplog):
    # open3d reads OBJ numbers as float32 and merges the float32-equal vertices 4 and 5 into 0 and 1
    # (reordering the rest); the importer restores the file's own values face by face
    path = tmp_path / "utm.obj"
    path.write_text(obj_lines(UTM) + "f 3 2 1\nf 1 3 4\nf 5 6 3\n")
    with caplog.at_level(logging.WARNING, logger="earthcrafter.io.mesh_import"):
        scene = import_mesh(path)
    assert source_corners(scene) == {tuple(map(tuple, UTM[f])) for f in [[2, 1, 0], [0, 2, 3], [4, 5, 2]]}
    assert len(scene.mesh.vertices) == 6 and scene.metadata["coordinate_precision_m"] < 1e-6
    assert "grid" not in caplog.text


def test_obj_precision_survives_material_grouping(tmp_path):
    # open3d groups triangles by material (b's face after a's), so file order alone would mismatch them
    (tmp_path / "m.mtl").write_text("newmtl a\nKd 1 0 0\nnewmtl b\nKd 0 1 0\n")
    path = tmp_path / "mats.obj"
    path.write_text("mtllib m.mtl\n" + obj_lines(UTM) + "usemtl b\nf 5 6 3\nusemtl a\nf 1 2 3\nusemtl b\nf 1 3 4\n")
    scene = import_mesh(path)
    assert source_corners(scene) == {tuple(map(tuple, UTM[f])) for f in [[4, 5, 2], [0, 1, 2], [0, 2, 3]]}
    assert scene.metadata["coordinate_precision_m"] < 1e-6


def test_float32_coordinates_are_warned_about_and_recorded(tmp_path, caplog):
    glb = write_glb(tmp_path / "utm.glb", UTM[:4, [0, 2, 1]], [[0, 1, 2], [0, 2, 3]], colors=np.ones((4, 3)))
    single = write_ply(tmp_path / "single.ply", UTM, POLYS, COLORS[:5].tolist() + [[0, 0, 0]], xyz="f4")
    double = write_ply(tmp_path / "double.ply", UTM, POLYS, COLORS[:5].tolist() + [[0, 0, 0]])
    # open3d matches triangles in file order within each material; faces before the first usemtl are
    # given a later material, so this file's float64 values cannot be matched and it falls back
    (tmp_path / "m.mtl").write_text("newmtl a\nKd 1 0 0\nnewmtl b\nKd 0 1 0\n")
    unmatched = tmp_path / "unmatched.obj"
    unmatched.write_text("mtllib m.mtl\n" + obj_lines(UTM[:4]) + "f 1 2 3\nusemtl b\nf 1 2 4\nusemtl a\nf 1 3 4\n")
    for path in (glb, single, unmatched):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="earthcrafter.io.mesh_import"):
            scene = import_mesh(path)
        assert scene.metadata["coordinate_precision_m"] == 0.25
        assert f"{path}: coordinates are read as float32" in caplog.text and "0.25 m grid" in caplog.text
        assert "4100010.500" in caplog.text and "local coordinates" in caplog.text
    assert "could not be matched" in caplog.text  # the OBJ says why
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="earthcrafter.io.mesh_import"):
        scene = import_mesh(double)  # plyfile keeps double properties as float64
    assert scene.metadata["coordinate_precision_m"] < 1e-6 and "grid" not in caplog.text
    np.testing.assert_allclose(scene.mesh.vertices[0] + scene.metadata["origin"]["metres"], UTM[0], rtol=0, atol=1e-9)


def test_obj_polygons_are_refused(tmp_path):
    # open3d's OBJ reader drops faces with more than 3 corners without a word
    path = tmp_path / "quads.obj"
    path.write_text(obj_lines(UTM[:4]) + "v 2 2 2 0.5 0.5 0.5\nf 1 2 3\nf 1 3 4 5\n")
    with pytest.raises(DataImportError, match=r"quads\.obj: 1 face\(s\) with other than 3 corners.*triangulate"):
        import_mesh(path)


@pytest.mark.parametrize(
    "option, value",
    [("up_axis", "w"), ("units", "furlong"), ("unknown_class", "keep"), ("texels_per_edge", 0), ("max_faces", 0)],
)
def test_option_errors_start_with_the_file(tmp_path, option, value):
    path = write_ply(tmp_path / "m.ply", VERTS, POLYS, COLORS)
    for call in (import_mesh, check_mesh):
        with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: option {option}={value!r}: ") as err:
            call(path, **{option: value})
        assert not isinstance(err.value, DataImportError)  # an option error, not a data error


def test_explicit_scene_id_is_checked(tmp_path):
    path = write_ply(tmp_path / "m.ply", VERTS, POLYS, COLORS)
    with pytest.raises(ValueError, match="scene_id='../up'"):
        import_mesh(path, scene_id="../up")
    assert import_mesh(path, scene_id="site_a").scene_id == "site_a"


def write_grid_obj(path, up="y"):
    """A 40 x 30 m terrain (1 m bumps) with its height along ``up``: Blender's OBJ export puts it along y."""
    x, h = np.meshgrid(np.arange(5) * 10.0, np.arange(4) * 10.0)
    bump = np.arange(20) % 3 * 0.5
    v = np.stack([x.ravel(), bump, h.ravel()] if up == "y" else [x.ravel(), h.ravel(), bump], axis=1)
    i = np.arange(20).reshape(4, 5)
    lower = np.stack([i[:-1, :-1], i[:-1, 1:], i[1:, 1:]], -1).reshape(-1, 3)
    upper = np.stack([i[:-1, :-1], i[1:, 1:], i[1:, :-1]], -1).reshape(-1, 3)
    tris = np.concatenate([lower, upper])
    path.write_text(obj_lines(v) + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in tris))
    return path, v, tris


@pytest.mark.parametrize("up", ["y", "z"])
def test_y_up_obj_is_warned_about_but_kept(tmp_path, caplog, up):
    path, v, faces = write_grid_obj(tmp_path / "terrain.obj", up)
    with caplog.at_level(logging.WARNING, logger="earthcrafter.io.mesh_import"):
        scene = import_mesh(path)
    assert source_corners(scene) == {tuple(map(tuple, v[f])) for f in faces}  # warned about, not changed
    if up == "z":
        assert "on its side" not in caplog.text
        return
    assert f"{path}: with up_axis='z' the mesh looks on its side" in caplog.text and "pass up_axis='y'" in caplog.text
    assert "extent x 40.0, y 1.0, z (up) 30.0 m" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="earthcrafter.io.mesh_import"):
        import_mesh(path, up_axis="y")
    assert "on its side" not in caplog.text


def test_taller_than_wide_is_warned_about(tmp_path, caplog):
    # two 2 m floors 30 m apart: all facing up, so only the extents give it away
    path = tmp_path / "floors.obj"
    floors = [[0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 0, 30], [2, 0, 30], [0, 2, 30]]
    path.write_text(obj_lines(floors) + "f 1 2 3\nf 4 5 6\n")
    with caplog.at_level(logging.WARNING, logger="earthcrafter.io.mesh_import"):
        import_mesh(path)
    assert "floors.obj: with up_axis='z' the mesh looks on its side: extent x 2.0, y 2.0, z (up) 30.0 m" in caplog.text
    assert "100% up" in caplog.text
