"""The label policy: a column is an atom to find only where the recorded image shows it."""

import collections

import numpy as np
import pytest

from sklatom.groundtruth import column_visibility
from sklatom.scenes import make_scene
from sklatom.simulation import MultisliceSimulator
from sklatom.structures import find_columns, make_structure


def _states(atoms, dose, pixel_size=0.1, detector="HAADF", blur=0.1):
    settings = MultisliceSimulator(method="incoherent", pixel_size=pixel_size,
                                   detector=detector)._settings()
    pos, names, _, members = find_columns(atoms, pixel_size)
    vis = column_visibility(atoms, pos, members, settings, dose, blur)
    out = collections.defaultdict(collections.Counter)
    for name, state in zip(names, vis.state):
        out["".join(c for c in name if not c.isdigit())][state] += 1
    return out, vis


def _share(counter, state):
    return counter[state] / max(1, sum(counter.values()))


@pytest.fixture(scope="module")
def srtio3():
    return make_structure("SrTiO3-001", (16.0, 16.0), random_state=0)


def test_oxygen_columns_of_haadf_srtio3_are_hidden_at_any_dose(srtio3):
    for dose in (1e6, 1e8):
        states, _ = _states(srtio3, dose)
        assert _share(states["O"], "hidden") == 1.0
        assert _share(states["Sr"], "visible") == 1.0
        assert _share(states["OTi"], "visible") == 1.0


def test_a_lattice_fades_into_the_noise_as_the_dose_falls():
    graphene = make_structure("graphene", (16.0, 16.0), defects=None, random_state=1)
    states = {dose: _states(graphene, dose)[0]["C"] for dose in (1e6, 1.5e5, 5e4, 5e3)}
    assert _share(states[1e6], "visible") == 1.0 and _share(states[1.5e5], "visible") == 1.0
    # each column on its own: the lattice around it does not make a faint column visible
    assert _share(states[5e4], "uncertain") == 1.0
    assert _share(states[5e3], "hidden") == 1.0


def _graphene_visibility(dose=1e6, **recording):
    """Visibility of the columns of a 16 Å graphene sheet at 0.1 Å/px, blur 0.1 Å."""
    graphene = make_structure("graphene", (16.0, 16.0), defects=None, random_state=1)
    settings = MultisliceSimulator(method="incoherent")._settings()
    pos, _, _, members = find_columns(graphene, 0.1)
    return column_visibility(graphene, pos, members, settings, dose, 0.1, **recording)


def test_detector_noise_counts_against_the_signal():
    clean = _graphene_visibility()
    floor = _graphene_visibility(pedestal=10.0)
    dark = _graphene_visibility(dark_counts=50.0)
    assert np.all(floor.snr < 0.5 * clean.snr) and np.all(dark.snr < clean.snr)
    np.testing.assert_allclose(floor.contrast, clean.contrast)


def test_a_diffuse_plateau_lowers_the_signal_of_every_column():
    clean = _graphene_visibility()
    spread = _graphene_visibility(diffuse=0.6)
    # the peak keeps 40 % of its height, and the shot noise under it falls less (the plateau
    # fills the gaps): SNR about half (0.51 when measured)
    np.testing.assert_allclose(spread.amplitude, 0.4 * clean.amplitude, rtol=1e-6)
    assert np.all(spread.snr < 0.6 * clean.snr) and np.all(spread.snr > 0.4 * clean.snr)
    np.testing.assert_allclose(spread.contrast, clean.contrast)
    # at a dose where the clean lattice is just visible, the spread one is not
    faint = _graphene_visibility(1.5e5, diffuse=0.6)
    assert np.all(faint.state != "visible")


def test_amorphous_atoms_are_never_columns_and_their_texture_hides_light_adatoms():
    heavy = make_scene("single_atoms", (30.0, 30.0), random_state=2, support="C",
                       element="Pt", thickness=60.0, adatom_density=0.004)
    states, vis = _states(heavy, 1e6, pixel_size=0.2)
    assert set(states) == {"Pt"}
    # isolated single atoms are visible (atoms of the small clusters may be too close)
    pos = find_columns(heavy, 0.2)[0] * 0.2
    from scipy.spatial import cKDTree

    d, _ = cKDTree(pos).query(pos, k=2)
    isolated = d[:, 1] > 2.0
    assert isolated.sum() >= 3 and np.all(vis.state[isolated] == "visible")
    light = make_scene("single_atoms", (30.0, 30.0), random_state=2, support="C",
                       element="Si", thickness=300.0, adatom_density=0.004)
    states, _ = _states(light, 1e6, pixel_size=0.2)
    # Si atoms on 30 nm of carbon drown in its texture (some may be at the limit)
    assert _share(states["Si"], "visible") < 0.2


def test_columns_closer_than_the_probe_resolves_are_uncertain():
    atoms = make_scene("single_atoms", (20.0, 20.0), random_state=0, support="vacuum",
                       element="Au", adatom_density=0.0)
    # two Au atoms 0.6 Å apart and one alone
    import ase

    pair = ase.Atoms("Au3", positions=[(10, 10, 4), (10.6, 10, 4), (18, 16, 4)],
                     cell=atoms.cell, pbc=True)
    pair.arrays["role"] = np.full(3, 4)
    pair.arrays["component"] = np.arange(3)
    pair.info["scan_region"] = atoms.info["scan_region"]
    _, vis = _states(pair, 1e6)
    assert list(vis.state) in (["uncertain", "uncertain", "visible"],
                               ["visible", "uncertain", "uncertain"])


def test_heavy_neighbours_do_not_hide_a_lattice_of_another_part():
    atoms = make_scene("single_atoms", (30.0, 30.0), random_state=5, support="graphene",
                       element="Pt", adatom_density=0.003)
    states, _ = _states(atoms, 1e6)
    # C next to Pt adatoms is compared with the graphene, not with the Pt
    assert _share(states["C"], "visible") > 0.9
    assert _share(states["Pt"], "hidden") == 0.0
