"""Mesh repair: floaters, degenerate and duplicate faces, normals, decimation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from earthcrafter.evaluation.mesh_metrics import mesh_quality
from earthcrafter.geometry.mesh_clean import CleanConfig, clean_mesh, face_normals
from earthcrafter.geometry.raycast import Shading, render_frames
from earthcrafter.io.scene import Mesh
from earthcrafter.semantics import CLASS_ID

from meshing_synth import aerial_cameras, concat, subdivide

OTHER = CLASS_ID["other_manmade"]


def box(lo, hi, cls: int = OTHER) -> Mesh:
    """Closed axis-aligned box, 12 faces wound outward."""
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    v = np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0],
                  [x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]], float)
    f = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                  [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]])
    return Mesh(v, f, np.full((8, 3), 90, np.uint8), np.full(12, cls, np.uint8))


def signed_volume(mesh: Mesh) -> float:
    t = mesh.vertices[mesh.faces]
    return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6)


def oriented_set(mesh: Mesh) -> set:
    """Faces as vertex-position triples rotated to start at their smallest corner: the
    same set means the same faces with the same winding, however vertices are indexed."""
    t = np.round(mesh.vertices[mesh.faces], 6) + 0.0  # [F, 3, 3]; + 0.0 turns -0.0 into 0.0
    first = np.lexsort((t[..., 2], t[..., 1], t[..., 0]), axis=-1)[:, 0]
    order = (first[:, None] + np.arange(3)) % 3
    rolled = np.take_along_axis(t, order[:, :, None], axis=1)
    return set(map(bytes, np.ascontiguousarray(rolled.reshape(len(t), 9))))


@pytest.fixture(scope="module")
def clean_town(town):
    return clean_mesh(town, CleanConfig())[0]


def test_floater_is_removed_and_counted(clean_town):
    floater = box((0, 0, 30), (0.5, 0.5, 30.5))  # 1.5 m^2 < min_component_area = 2 m^2
    mesh, rep = clean_mesh(concat([clean_town, floater]), CleanConfig())
    assert rep["components"] == 2 and rep["components_removed"] == 1
    assert rep["faces_removed_small_components"] == 12 and rep["area_removed_small_components"] == pytest.approx(1.5)
    assert rep["vertices_unreferenced"] == 8
    assert rep["faces_out"] == len(clean_town.faces) and mesh.vertices[:, 2].max() < 20


@pytest.mark.parametrize(
    "cfg, removed",
    [
        (CleanConfig(min_component_area=0.0), 0),
        (CleanConfig(min_component_area=0.0, min_component_faces=13), 1),  # 12-face box, 150 m^2
        (CleanConfig(min_component_area=0.0, min_component_area_fraction=0.05), 1),
        (CleanConfig(min_component_area=0.0, min_component_area_fraction=0.01), 0),
    ],
)
def test_component_criteria(clean_town, cfg, removed):
    big_floater = box((0, 0, 40), (5, 5, 45))  # 150 m^2 of ~4300 m^2: 3.5 %
    _, rep = clean_mesh(concat([clean_town, big_floater]), cfg)
    assert rep["components_removed"] == removed


def test_degenerate_and_duplicate_faces(clean_town):
    m = clean_town
    n = len(m.vertices)
    extra_v = np.array([[100.0, 0, 0], [101.0, 0, 0], [102.0, 0, 0]])  # collinear
    faces = np.concatenate([
        m.faces,
        [[0, 0, 1]],  # repeated vertex
        [[n, n + 1, n + 2]],  # zero area
        m.faces[[5]][:, [1, 2, 0]],  # duplicate (rotated)
        m.faces[[9]][:, [2, 1, 0]],  # duplicate (reversed)
    ])
    sem = np.concatenate([m.face_semantic, [OTHER, OTHER, OTHER, OTHER]])
    colors = np.concatenate([m.vertex_colors, np.zeros((3, 3), np.uint8)])
    dirty = Mesh(np.concatenate([m.vertices, extra_v]), faces, colors, sem)
    out, rep = clean_mesh(dirty, CleanConfig())
    assert rep["faces_degenerate"] == 2 and rep["faces_duplicate"] == 2
    assert rep["vertices_unreferenced"] == 3
    assert len(out.faces) == len(m.faces)
    assert oriented_set(out) == oriented_set(m)
    assert (out.face_semantic != OTHER).all()  # the originals kept their classes


def test_merge_joins_a_triangle_soup(clean_town):
    m = clean_town
    soup = Mesh(m.vertices[m.faces.ravel()], np.arange(3 * len(m.faces)).reshape(-1, 3),
                m.vertex_colors[m.faces.ravel()], m.face_semantic)
    out, rep = clean_mesh(soup, CleanConfig())
    assert rep["vertices_merged"] == len(soup.vertices) - len(m.vertices)
    assert rep["components"] == 1 and len(out.vertices) == len(m.vertices)


def test_random_flips_are_undone(clean_town):
    rng = np.random.default_rng(0)
    flip = rng.random(len(clean_town.faces)) < 0.3
    faces = clean_town.faces.copy()
    faces[flip] = faces[flip][:, ::-1]
    scrambled = Mesh(clean_town.vertices, faces, clean_town.vertex_colors, clean_town.face_semantic)
    assert oriented_set(scrambled) != oriented_set(clean_town)
    out, rep = clean_mesh(scrambled, CleanConfig(orientation="consistent"))
    assert oriented_set(out) == oriented_set(clean_town)
    assert rep["faces_flipped"] == flip.sum() and rep["non_orientable_components"] == 0
    none, _ = clean_mesh(scrambled, CleanConfig(orientation="none"))
    assert oriented_set(none) == oriented_set(scrambled)


def test_inverted_components_are_turned_outward_and_up(clean_town):
    inv_box = box((50, 50, 0), (55, 55, 5))
    inv_box.faces = inv_box.faces[:, ::-1].copy()
    terrain = Mesh(clean_town.vertices, clean_town.faces[:, ::-1].copy(), clean_town.vertex_colors, clean_town.face_semantic)
    out, rep = clean_mesh(concat([terrain, inv_box]), CleanConfig())
    assert rep["components_reoriented"] >= 2  # the town's parts (joined or not by shared edges) and the box
    parts = out.vertices[out.faces].mean(1)[:, 0] > 45
    assert signed_volume(Mesh(out.vertices, out.faces[parts])) == pytest.approx(125.0)
    assert oriented_set(Mesh(out.vertices, out.faces[~parts])) == oriented_set(clean_town)


def test_up_mode_flips_every_downward_face():
    bridge = box((0, 0, 5), (20, 4, 5.5))  # a closed deck: its underside faces down
    out, rep = clean_mesh(bridge, CleanConfig(orientation="consistent"))
    assert (face_normals(out.vertices, out.faces)[:, 2] < 0).sum() == 2
    out, rep = clean_mesh(bridge, CleanConfig(orientation="up"))
    assert rep["faces_flipped_up"] == 2
    assert (face_normals(out.vertices, out.faces)[:, 2] >= 0).all()


def test_non_orientable_surface_is_reported_and_left_alone():
    n, R = 40, 5.0
    th = 2 * np.pi * np.arange(n) / n
    v = np.concatenate([
        np.stack([(R + w * np.cos(th / 2)) * np.cos(th), (R + w * np.cos(th / 2)) * np.sin(th), w * np.sin(th / 2)], 1)
        for w in (-1.0, 1.0)
    ])  # row a: 0..n-1, row b: n..2n-1
    i = np.arange(n)
    j = (i + 1) % n
    a1 = np.where(j == 0, n + j, j)  # the half twist joins the last segment's a side to b
    b1 = np.where(j == 0, j, n + j)
    faces = np.concatenate([np.stack([i, n + i, b1], 1), np.stack([i, b1, a1], 1)])
    mobius = Mesh(v, faces)
    out, rep = clean_mesh(mobius, CleanConfig(min_component_area=0.0))
    assert rep["non_orientable_components"] == 1 and rep["faces_flipped"] == 0
    assert np.array_equal(out.faces, mobius.faces)


@pytest.fixture(scope="module")
def dense_town(town):
    return subdivide(town, 1.0)


def test_decimation_hits_budget_and_keeps_semantics_and_colours(dense_town, town):
    out, rep = clean_mesh(dense_town, CleanConfig(target_faces=3000))
    assert rep["decimation"]["faces_before"] > 20_000
    assert 2700 <= rep["faces_out"] <= 3000
    q = mesh_quality(out, town, n_samples=50_000, threshold=0.5)
    assert q["fscore"] > 0.95
    # Compare what an aerial camera sees: class and colour per pixel, both meshes.
    flat = Shading(ambient=1.0, shadows=False)
    cams = aerial_cameras(n_ring=4, size=(128, 96))
    for a, b in zip(render_frames(town, cams, flat), render_frames(out, cams, flat)):
        hit = np.isfinite(a.depth) & np.isfinite(b.depth)
        assert (a.semantic[hit] == b.semantic[hit]).mean() > 0.95
        assert np.abs(a.rgb[hit].astype(float) - b.rgb[hit]).mean() < 10


def test_report_is_json_and_input_untouched(town):
    before = (town.vertices.copy(), town.faces.copy())
    _, rep = clean_mesh(town, CleanConfig(target_faces=4000))
    json.dumps(rep)
    assert np.array_equal(town.vertices, before[0]) and np.array_equal(town.faces, before[1])


def test_bad_input_raises():
    b = box((0, 0, 0), (1, 1, 1))
    b.vertices[3] = [np.nan, 0, 0]
    with pytest.raises(ValueError, match="1 vertices with NaN/inf coordinates \\(first at index 3\\)"):
        clean_mesh(b, CleanConfig())
    with pytest.raises(ValueError, match="orientation"):
        CleanConfig(orientation="down")
    with pytest.raises(ValueError, match="min_component_fases"):
        CleanConfig(min_component_fases=3)
