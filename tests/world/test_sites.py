"""Whole sites: diversity, determinism, geometry/frame consistency, buildings, roads, budgets."""

import json

import numpy as np
import open3d as o3d
import pytest
from scipy import ndimage

from earthcrafter.geometry.raycast import MeshRaycaster
from earthcrafter.io.scene import Mesh, read_scene, write_scene
from earthcrafter.semantics import CLASS_ID, CLASS_NAMES
from earthcrafter.world import BIOMES, URBAN_BIOMES, WorldConfig, generate_site, plan_site, site_mesh
from earthcrafter.world.grid import points_in_polygon
from earthcrafter.world.mesh import class_histogram
from earthcrafter.world.shapes import triangle_areas

# --------------------------------------------------------------------------- shared small sites (200 m, 2 m cells)

BATCH_BIOMES = BIOMES + ("suburb", "downtown", "industrial", "river")  # 16 sites


@pytest.fixture(scope="module")
def batch():
    """16 small sites covering every biome: list of (plan, mesh)."""
    cfg = WorldConfig(seed=0, size_m=200, cell_m=2, frames_per_site=0, biomes=BATCH_BIOMES)
    out = []
    for i in range(len(BATCH_BIOMES)):
        plan = plan_site(cfg, i)
        out.append((plan, site_mesh(plan)))
    return out


FRAMED = WorldConfig(
    seed=1, size_m=200, cell_m=2, frames_per_site=4, image_width=64, image_height=64, biomes=("downtown", "mountains", "river")
)


@pytest.fixture(scope="module")
def framed():
    """Three small sites with rendered frames: list of (plan, scene)."""
    return [(plan_site(FRAMED, i), generate_site(FRAMED, i)) for i in range(3)]



EXPECTED = {  # classes each biome must contain, whatever the seed
    "farmland": {"cropland", "road"},
    "hills": {"grass_lawn", "tree"},
    "mountains": {"rock_cliff", "snow_ice", "tree"},
    "desert": {"sand_desert"},
    "lakes": {"river_lake", "tree"},
    "river": {"river_lake", "bridge", "road"},
    "coast": {"sea"},
    "wetland": {"wetland", "river_lake"},
    "forest": {"tree"},
    "suburb": {"building_roof", "building_facade", "road", "grass_lawn", "tree", "vehicle"},
    "downtown": {"building_roof", "building_facade", "road", "sidewalk_path", "vehicle"},
    "industrial": {"building_roof", "building_facade", "road", "railway", "vehicle"},
}


def _classes(mesh: Mesh) -> set[str]:
    return {CLASS_NAMES[c] for c in np.unique(mesh.face_semantic)}


def _submesh(mesh: Mesh, names) -> Mesh:
    keep = np.isin(mesh.face_semantic, [CLASS_ID[n] for n in names])
    return Mesh(mesh.vertices, mesh.faces[keep], None, mesh.face_semantic[keep])


def _topdown(mesh: Mesh, size: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Class hit by a vertical ray at every raster point (-1 where nothing)."""
    t = np.arange(0.5 * step, size, step)
    X, Y = np.meshgrid(t, t)
    o = np.stack([X, Y, np.full_like(X, 1e4)], -1)
    d = np.zeros_like(o)
    d[..., 2] = -1
    hit = MeshRaycaster(mesh).cast(o, d)
    return np.where(hit["prim"] >= 0, mesh.face_semantic[np.maximum(hit["prim"], 0)], -1), hit["t"]


# --------------------------------------------------------------------------- diversity

def test_batch_covers_every_biome_and_most_classes(batch):
    assert {p.biome for p, _ in batch} == set(BIOMES)
    present = set().union(*(_classes(m) for _, m in batch))
    assert "unlabeled" not in present  # every mesh face carries a real class
    assert len(present) >= 23, sorted(set(CLASS_NAMES[1:]) - present)


@pytest.mark.parametrize("k", range(len(BATCH_BIOMES)))
def test_biome_has_its_classes(batch, k):
    plan, mesh = batch[k]
    assert plan.biome == BATCH_BIOMES[k]
    missing = EXPECTED[plan.biome] - _classes(mesh)
    assert not missing, f"{plan.biome}: missing {missing}"


def test_biome_signatures_by_area(batch):
    """Dominant covers, not just a face or two: shares of the ground area per biome."""
    share = {}
    for plan, _ in batch:
        g = plan.ground
        share.setdefault(plan.biome, []).append({n: float((g == CLASS_ID[n]).mean()) for n in CLASS_NAMES})
    first = {b: v[0] for b, v in share.items()}
    assert first["desert"]["sand_desert"] > 0.4
    assert first["mountains"]["rock_cliff"] + first["mountains"]["snow_ice"] > 0.3
    assert first["farmland"]["cropland"] > 0.3
    assert first["coast"]["sea"] > 0.05 and first["lakes"]["river_lake"] > 0.1
    assert first["downtown"]["road"] + first["downtown"]["sidewalk_path"] > 0.25


def test_mesh_is_light(batch):
    """Faces per square metre stay low enough for a 600 m site to be under 1.5 M faces."""
    for plan, mesh in batch:
        per_site = len(mesh.faces) / plan.grid.size**2 * 600.0**2
        assert per_site < 1.5e6, (plan.biome, per_site)


def test_terrain_mesh_matches_height_field(batch):
    plan, mesh = batch[0]
    terrain = Mesh(mesh.vertices, mesh.faces[: 2 * plan.grid.n**2], None, mesh.face_semantic[: 2 * plan.grid.n**2])
    rng = np.random.default_rng(0)
    xy = rng.uniform(1, plan.grid.size - 1, (500, 2))
    z_top = float(plan.H.max()) + 10.0  # short rays: float32 ray casting stays precise
    np.testing.assert_allclose(MeshRaycaster(terrain).height_at(xy, z_top=z_top), plan.z(xy[:, 0], xy[:, 1]), atol=1e-3)


# --------------------------------------------------------------------------- metadata, determinism

def test_metadata_and_round_trip(framed, tmp_path):
    plan, scene = framed[0]
    meta = scene.metadata
    for key in ("biome", "size_m", "seed", "site_index", "generator", "class_histogram", "objects", "skipped"):
        assert key in meta
    assert meta["biome"] == plan.biome and meta["size_m"] == 200.0 and meta["seed"] == 1
    assert set(meta["class_histogram"]) == set(CLASS_NAMES)
    total = triangle_areas(scene.mesh.vertices, scene.mesh.faces).sum()
    assert sum(meta["class_histogram"].values()) == pytest.approx(total, rel=1e-6)
    assert meta["class_histogram"] == class_histogram(scene.mesh)
    json.dumps(meta)  # serialisable as is
    back = read_scene(write_scene(tmp_path, scene))
    assert back.metadata["biome"] == plan.biome and len(back.frames) == len(scene.frames)
    np.testing.assert_array_equal(back.mesh.face_semantic, scene.mesh.face_semantic)


def _arrays(scene):
    out = [scene.mesh.vertices, scene.mesh.faces, scene.mesh.vertex_colors, scene.mesh.face_semantic]
    for f in scene.frames:
        out += [f.rgb, f.depth, f.normal, f.semantic, f.camera.world_to_camera, f.camera.K]
    return out


def test_sites_are_pure_functions_of_seed_and_index():
    cfg = WorldConfig(seed=4, size_m=160, frames_per_site=2, image_width=40, image_height=40, biomes=("suburb", "coast"))
    a = generate_site(cfg, 1)
    generate_site(cfg, 0)  # generating another site first must not change site 1
    b = generate_site(cfg, 1)
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    c = generate_site(cfg.model_copy(update={"seed": 5}), 1)
    assert c.mesh.vertices.shape != a.mesh.vertices.shape or not np.array_equal(c.mesh.vertices, a.mesh.vertices)
    assert not np.array_equal(c.frames[0].rgb, a.frames[0].rgb)


# --------------------------------------------------------------------------- frames against geometry

def test_frames_agree_with_mesh(framed):
    for plan, scene in framed:
        mesh = scene.mesh
        rs = o3d.t.geometry.RaycastingScene()
        rs.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)), o3d.core.Tensor(mesh.faces.astype(np.uint32)))
        fn = np.cross(mesh.vertices[mesh.faces[:, 1]] - mesh.vertices[mesh.faces[:, 0]], mesh.vertices[mesh.faces[:, 2]] - mesh.vertices[mesh.faces[:, 0]])
        fn /= np.linalg.norm(fn, axis=1, keepdims=True)
        assert len(scene.frames) == FRAMED.frames_per_site
        for fr in scene.frames:
            valid = np.isfinite(fr.depth)
            assert valid.mean() > 0.6, f"{plan.biome} frame {fr.name} sees too little"
            pts = fr.camera.unproject_depth(fr.depth)[valid].astype(np.float32)
            dist = rs.compute_distance(o3d.core.Tensor(pts)).numpy()
            scale = 1e-5 * np.abs(pts).max() + 1e-3  # float32 precision of the scene
            assert np.quantile(dist, 0.99) < 10 * scale and dist.max() < 0.05, (plan.biome, dist.max())
            closest = rs.compute_closest_points(o3d.core.Tensor(pts))["primitive_ids"].numpy()
            agree = fr.semantic[valid] == mesh.face_semantic[closest]
            assert agree.mean() > 0.98, (plan.biome, agree.mean())
            cos = np.abs(np.einsum("ij,ij->i", fr.normal[valid], fn[closest]))
            assert np.mean(cos > 0.99) > 0.97
            assert (fr.semantic[~valid] == 0).all()


def test_cameras_clear_of_terrain_and_buildings(framed):
    for plan, scene in framed:
        for fr in scene.frames:
            eye = fr.camera.center
            if plan.grid.inside(eye[0], eye[1]):
                assert eye[2] > plan.z(eye[:1], eye[1:2])[0] + 2.0, plan.biome
            for b in plan.buildings:
                inside = points_in_polygon(eye[None, :2], b.footprint)[0]
                assert not (inside and eye[2] < b.z_top + 20), f"camera inside/over a building in {plan.biome}"
            # Looks at the site: the central pixel sees a surface point inside it.
            h, w = fr.depth.shape
            centre = fr.camera.unproject_depth(fr.depth)[h // 2, w // 2]
            assert np.isfinite(centre).all() and plan.grid.inside(centre[0], centre[1], margin=-1.0)


def test_camera_mix_of_altitudes_and_pitches():
    cfg = WorldConfig(seed=2, size_m=200, frames_per_site=12, image_width=32, image_height=32, biomes=("farmland",))
    scene = generate_site(cfg, 0)
    pitch = np.degrees(np.arcsin([-f.camera.forward[2] for f in scene.frames]))
    assert (pitch >= 79).sum() >= 1  # some near-nadir
    assert ((pitch >= cfg.pitch_deg_range[0] - 1) & (pitch < 79)).sum() >= 6  # mostly oblique
    heights = [f.camera.center[2] for f in scene.frames]
    assert np.ptp(heights) > 0.5 * (max(cfg.altitudes) - min(cfg.altitudes))


# --------------------------------------------------------------------------- buildings and roads

def test_buildings_closed_roofs_cover_footprints(batch):
    checked = 0
    for plan, mesh in batch:
        if not plan.buildings:
            continue
        roof = mesh.face_semantic == CLASS_ID["building_roof"]
        V, F = mesh.vertices, mesh.faces[roof]
        nz = 0.5 * np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])[:, 2]
        assert (nz > 0).all(), plan.biome
        assert nz.sum() == pytest.approx(sum(b.area for b in plan.buildings), rel=1e-6), plan.biome
        # Vertical rays inside every footprint hit a roof; just outside, no building at all.
        bmesh = _submesh(mesh, ["building_roof", "building_facade"])
        caster = MeshRaycaster(bmesh)
        rng = np.random.default_rng(1)
        for b in plan.buildings:
            lo, hi = b.footprint.min(0), b.footprint.max(0)
            pts = rng.uniform(lo, hi, (60, 2))
            c = b.footprint.mean(0)
            shrunk = c + 0.97 * (b.footprint - c)
            pts = pts[points_in_polygon(pts, shrunk) & points_in_polygon(pts, b.footprint)]
            if len(pts) == 0:
                continue
            top = float(mesh.vertices[:, 2].max()) + 5.0
            o = np.column_stack([pts, np.full(len(pts), top)])
            hit = caster.cast(o, np.tile([0.0, 0.0, -1.0], (len(o), 1)))
            assert (hit["prim"] >= 0).all()
            assert (bmesh.face_semantic[hit["prim"]] == CLASS_ID["building_roof"]).all()
            assert (top - hit["t"] >= b.z_top - 0.01).all()  # its roof, or a tier stacked on it
            checked += 1
        # Just outside the footprints (0.3 m off each wall's midpoint) there is no building.
        out = []
        for b in plan.buildings:
            a, e = b.footprint, np.roll(b.footprint, -1, axis=0)
            edge = e - a
            normal = np.column_stack([edge[:, 1], -edge[:, 0]]) / np.linalg.norm(edge, axis=1, keepdims=True)
            out.append(0.5 * (a + e) + 0.3 * normal)  # outward for counter-clockwise footprints
        out = np.concatenate(out)
        for b in plan.buildings:  # drop points that fall on a neighbouring building
            out = out[~points_in_polygon(out, b.footprint)]
        assert len(out) > 0.5 * sum(len(b.footprint) for b in plan.buildings)
        top = float(mesh.vertices[:, 2].max()) + 5.0
        hit = caster.cast(np.column_stack([out, np.full(len(out), top)]), np.tile([0.0, 0.0, -1.0], (len(out), 1)))
        assert (hit["prim"] < 0).mean() > 0.98, plan.biome
    assert checked > 40


@pytest.mark.parametrize("k", [i for i, b in enumerate(BATCH_BIOMES) if b in URBAN_BIOMES])
def test_urban_roads_form_one_network(batch, k):
    """Top-down raster of road and bridge-deck faces is one 8-connected component."""
    plan, mesh = batch[k]
    cls, _ = _topdown(_submesh(mesh, ["road", "bridge"]), plan.grid.size, 1.0)
    road = cls >= 0
    assert road.mean() > 0.05, plan.biome
    _, n = ndimage.label(road, structure=np.ones((3, 3)))
    assert n == 1, f"{plan.biome}: {n} road components"


def test_roads_cross_rivers_on_bridges(batch):
    rivers = [(p, m) for p, m in batch if p.biome == "river"]
    assert rivers
    for plan, mesh in rivers:
        cls, t = _topdown(_submesh(mesh, ["road", "bridge"]), plan.grid.size, 1.0)
        _, n = ndimage.label(cls >= 0, structure=np.ones((3, 3)))
        assert n == 1
        # The deck spans water cells and stays above the water surface there.
        step = 1.0
        yy, xx = np.nonzero(cls == CLASS_ID["bridge"])
        x, y = (xx + 0.5) * step, (yy + 0.5) * step
        wet = plan.grid.lookup(plan.water, x, y)
        assert wet.sum() > 10
        level = plan.grid.lookup(plan.water_level, x[wet], y[wet])
        assert ((1e4 - t[yy[wet], xx[wet]]) > level + 1.0).all()
