"""Tests of the shipped pretrained model on fresh simulated images (seeds not used in training)."""

import numpy as np
import pytest

from sklatom.datasets import make_lattice_images
from sklatom.metrics import atom_scores, sites_filled
from sklatom.peaks import PeakFinder
from sklatom.pretrained import GENERAL_LABELS, LATTICE_MODELS, PRETRAINED, load_pretrained
from sklatom.simulation import AcquisitionModel, MultisliceSimulator
from sklatom.structures import LATTICES, empty_sites

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def general():
    return load_pretrained()


def recorded(lattice, pixel_size, seed, shape=(160, 160), dose=5e6):
    X, _, coords = make_lattice_images(
        2, lattice, shape=shape, pixel_size=pixel_size, labels=GENERAL_LABELS,
        simulator=MultisliceSimulator(method="incoherent", progress=False),
        acquisition=AcquisitionModel(dose=dose, pixel_size=pixel_size, blur=0.15,
                                     random_state=seed),
        random_state=seed)
    return X, coords


def scores(seg, X, coords, pixel_size):
    found = PeakFinder().transform(seg.transform(X))
    return atom_scores(found, coords, tolerance=0.5, pixel_size=pixel_size, ignore_border=0.5,
                       image_shape=[x.shape for x in X])


#: Targets of issue 14 the shipped model does not meet yet (measured 2026-12-07 with the model
#: of scripts/train_pretrained.py, seed 0): strict, so each turns into a failure when it is met.
KNOWN_GAP = "issue 14 target not met by the shipped model"


@pytest.mark.parametrize("lattice", [
    pytest.param(name, marks=pytest.mark.xfail(
        strict=True, reason=f"{KNOWN_GAP}: B/N vs C-dopant class accuracy 0.945 (>= 0.97)"))
    if name == "hBN" else name for name in sorted(LATTICES)])
def test_general_model_finds_the_columns_of_every_lattice(general, lattice):
    X, coords = recorded(lattice, 0.1, seed=4242)
    s = scores(general, X, coords, 0.1)
    assert s["f1"] >= 0.97, s
    assert s["rmse"] <= 0.1, s  # Å
    assert s["class_accuracy"] >= 0.97, s


@pytest.mark.parametrize("pixel_size", [0.05, 0.06, 0.16, 0.5])
def test_general_model_rescales_other_pixel_sizes(general, pixel_size):
    side = int(round(16.0 / pixel_size))  # 16 Å of MoS2 at any sampling (both ends of range)
    X, coords = recorded("MoS2", pixel_size, seed=4343, shape=(side, side))
    seg = general.set_params(pixel_size=pixel_size)
    try:
        s = scores(seg, X, coords, pixel_size)
        proba = seg.transform(X[:1])
    finally:
        general.set_params(pixel_size=None)
    assert proba.shape == (1, 3, side, side)
    assert s["f1"] >= 0.95, s
    assert s["class_accuracy"] >= 0.95, s
    # without being told, the network works at the wrong scale and misses atoms or mixes up
    # Mo and S2 columns: the rescaling matters
    wrong = scores(general, X, coords, pixel_size)
    assert min(wrong["f1"], wrong["class_accuracy"]) < min(s["f1"], s["class_accuracy"]) - 0.1


def test_every_listed_model_loads_and_knows_its_sampling():
    for name in PRETRAINED:
        seg = load_pretrained(name, device="cpu")
        assert seg.pixel_size_ == pytest.approx(0.1)
        assert seg.classes_[0] == "background"
        out = seg.transform(np.random.default_rng(0).random((1, 40, 56)))
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------------------------
# where there is nothing to find, nothing is found; scenes unlike perfect lattices
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("counts", [1, 3, 10, 30, 100, 300, 1000])
def test_no_atom_in_flat_poisson_noise(general, counts):
    noise = np.random.default_rng(counts).poisson(counts, (2, 192, 192)).astype(np.float32)
    _, confidence = PeakFinder().transform(general.transform(noise), return_confidence=True)
    assert all(np.sum(c >= 0.5) == 0 for c in confidence), [np.sum(c >= 0.5) for c in confidence]


def scene(kind, pixel_size, seed, options=None, artefacts=None, side_A=24.0, dose=1e6):
    from sklatom.datasets import make_scene_images

    side = int(round(side_A / pixel_size))
    X, _, coords, info = make_scene_images(
        2, kind, shape=(side, side), pixel_size=pixel_size, scene_options=options or {},
        artefacts=artefacts, acquisition=AcquisitionModel(dose=dose, blur=0.15,
                                                          background=0.2),
        return_info=True, random_state=seed)
    return X, coords, info.uncertain


def found_in(general, X, pixel_size):
    general.set_params(pixel_size=pixel_size)
    try:
        return PeakFinder().transform(general.transform(X))
    finally:
        general.set_params(pixel_size=None)


def far_from(found, coords, uncertain, pixel_size, shape, distance=1.0):
    """Found atoms further than ``distance`` Å from every labelled or uncertain column, and
    more than ``distance`` Å inside the image (columns cut by the edge are not listed)."""
    from scipy.spatial import cKDTree

    out = 0
    edge = distance / pixel_size
    for f, c, u in zip(found, coords, uncertain):
        known = np.concatenate([c[:, :2], u[:, :2]])
        f = f[np.all((f[:, :2] >= edge) & (f[:, :2] <= np.array(shape) - 1 - edge), axis=1)]
        if len(f) == 0:
            continue
        if len(known) == 0:
            out += len(f)
            continue
        d, _ = cKDTree(known * pixel_size).query(f[:, :2] * pixel_size)
        out += int(np.sum(d > distance))
    return out


@pytest.mark.parametrize("kind, options, pixel_size", [
    ("vacuum", {}, 0.2),
    ("amorphous", {"support": "C"}, 0.2),
    ("amorphous", {"support": "SiO2"}, 0.3)])
def test_nothing_is_found_in_vacuum_and_amorphous_material(general, kind, options, pixel_size):
    X, coords, uncertain = scene(kind, pixel_size, seed=77, options=options)
    found = found_in(general, X, pixel_size)
    assert sum(len(f) for f in found) == 0, [len(f) for f in found]


@pytest.mark.parametrize("kind, options, pixel_size", [
    pytest.param("nanoparticle", {"support": "vacuum", "crystal": "Pt", "diameter": 18.0},
                 0.15, marks=pytest.mark.xfail(
                     strict=True, reason=f"{KNOWN_GAP}: F1 0.941 on a Pt particle (>= 0.95)")),
    # a support at the density of real amorphous carbon (0.10 atoms/Å³, since 2026-12-07)
    # hides more of the atoms: the previous model scores 0.625 here too
    pytest.param("single_atoms", {"support": "C", "element": "Pt", "thickness": 40.0}, 0.25,
                 marks=pytest.mark.xfail(strict=True, reason=f"{KNOWN_GAP}: F1 0.50 on Pt "
                                         "atoms on 40 Å of C (5 of 11 found, 4 false)")),
    ("crystal", {"crystal": "SrTiO3", "zone_axis": (0, 0, 1), "coverage": 1.0}, 0.2),
    ("flake", {"lattice": "MoS2", "support": "vacuum"}, 0.15),
])
def test_scenes_unlike_the_old_training_set(general, kind, options, pixel_size):
    X, coords, uncertain = scene(kind, pixel_size, seed=91, options=options)
    found = found_in(general, X, pixel_size)
    s = atom_scores(found, coords, tolerance=0.5, pixel_size=pixel_size, ignore_border=0.5,
                    image_shape=[x.shape for x in X], dont_care=uncertain)
    assert s["f1"] >= 0.95, s
    # nothing in the vacuum around a particle or a flake, on the support, or at the O columns
    assert far_from(found, coords, uncertain, pixel_size, X[0].shape) <= 1


def test_nothing_is_found_under_a_saturated_patch(general):
    from scipy import ndimage

    X, coords, uncertain = scene("lattice", 0.1, seed=5, options={"lattice": "graphene",
                                                                  "contamination": 0},
                                 artefacts={"saturated_patch": 1.0})
    found = found_in(general, X, 0.1)
    for image, f in zip(X, found):
        # the patch: connected pixels at the full scale, at least an atom's disk (3 Å²);
        # a clipped atom top (an island of a few px at the maximum) is an atom, not a patch
        lab, _ = ndimage.label(image == image.max(), np.ones((3, 3), bool))
        area = np.bincount(lab.ravel())
        patch = np.isin(lab, np.flatnonzero(area >= 300)) & (lab > 0)
        assert patch.mean() > 0.03
        r, c = np.round(f[:, :2]).astype(int).T
        on = patch[np.clip(r, 0, patch.shape[0] - 1), np.clip(c, 0, patch.shape[1] - 1)]
        assert on.sum() == 0, f[on]


# --------------------------------------------------------------------------------------------
# lattice-specific models (issue 15): low doses, vacancies kept empty
# --------------------------------------------------------------------------------------------
SHIPPED_LATTICE_MODELS = [name for name in LATTICE_MODELS if name in PRETRAINED]


def low_dose(lattice, dose, seed, n_images=2, size=160):
    """80 kV HAADF images at 0.1 Å/px with planted vacancies: images, every column (the
    truth), the empty sites (px)."""
    X, _, coords, info = make_lattice_images(
        n_images, lattice, shape=(size, size), labels=GENERAL_LABELS,
        defects={"vacancy": 3} if LATTICES[lattice].depth == 0 else None,
        simulator=MultisliceSimulator(method="incoherent", energy=80e3, detector="HAADF",
                                      progress=False),
        acquisition=AcquisitionModel(dose=dose, blur=0.15), label_policy="all",
        return_info=True, random_state=seed)
    return X, coords, [empty_sites(a) / 0.1 for a in info.structures]


@pytest.mark.parametrize("name", SHIPPED_LATTICE_MODELS)
def test_lattice_model_finds_a_low_dose_lattice_the_general_one_misses(general, name):
    lattice = LATTICE_MODELS[name][0]
    X, coords, sites = low_dose(lattice, 2e4, seed=5151)
    model = load_pretrained(name, device="cpu")
    mine, theirs = scores(model, X, coords, 0.1), scores(general, X, coords, 0.1)
    assert mine["f1"] >= 0.85 and mine["f1"] > theirs["f1"] + 0.3, (mine, theirs)
    found = PeakFinder().transform(model.transform(X))
    filled, total = sites_filled(found, sites, 0.5, pixel_size=0.1)
    assert filled <= total // 3, (filled, total)  # sites with a found atom anyway


@pytest.mark.parametrize("name", SHIPPED_LATTICE_MODELS)
@pytest.mark.xfail(strict=True, reason="issue 15 target not met by the shipped lattice model: "
                   "graphene fills 5 of 6 vacancy sites at 1e6 e/Å² (general 2 of 6)")
def test_lattice_model_keeps_vacancies_empty_at_a_high_dose(general, name):
    X, coords, sites = low_dose(LATTICE_MODELS[name][0], 1e6, seed=5152)
    found = PeakFinder().transform(load_pretrained(name, device="cpu").transform(X))
    filled, total = sites_filled(found, sites, 0.5, pixel_size=0.1)
    assert total >= 4 and filled <= total // 6, (filled, total)
