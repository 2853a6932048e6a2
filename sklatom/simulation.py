"""STEM image simulation with abTEM, and a model of the acquisition (dose, noise, distortions).

:class:`MultisliceSimulator` turns structures (:class:`ase.Atoms`) into noise-free images at a
requested pixel size. :class:`AcquisitionModel` turns noise-free images into recorded ones
(finite dose, read noise, probe-source blur, scan distortions, background, contrast); it also
moves ground-truth coordinates with the distortion, so it doubles as training augmentation.

Physics and its approximations
------------------------------
``method="multislice"`` runs abTEM's multislice for every probe position of a scan at the probe's
Nyquist sampling ``λ / (4 α)``; the scan is then Fourier-interpolated to the output pixel size.
An incoherent (annular dark-field) image is band-limited to ``2 α / λ``, so a Nyquist scan holds
all of its information and the interpolation is exact up to the border, which is mirrored before
interpolation to avoid ringing. ``method="prism"`` computes the same images with abTEM's PRISM
S-matrix (interpolation factor chosen so the probe window stays at least ``prism_window`` Å
wide), several times faster at a correlation above 0.9999 with multislice (measured by
``benchmarks/bench_simulation.py``).
``method="incoherent"`` is a fast approximation for bulk training data: each atom scatters into
the detector with its own cross-section (computed once per element by a plane-wave multislice
through the isolated atom), spread by a Gaussian of ``0.1 Å`` and blurred by the probe
intensity. It neglects channelling along thick columns, dynamical cross-talk between neighbours
and coherent (bright-field) contrast, so it is offered for annular dark-field detectors only.
"""

import numbers
from functools import lru_cache

import numpy as np
from joblib import Parallel, delayed
from scipy import ndimage
from scipy.fft import irfftn, next_fast_len, rfftn
from scipy.signal import resample
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state

from ._validation import check_image_batch, check_pixel_size, map_items, stack_if_same_shape
from .structures import scan_region

__all__ = ["MultisliceSimulator", "AcquisitionModel", "DETECTORS", "wavelength"]

#: Named detector presets: (inner, outer) collection angles in mrad.
DETECTORS = {
    "HAADF": (80.0, 190.0),
    "MAADF": (40.0, 80.0),
    "ABF": ("half", "full"),  # half the probe semi-angle to the semi-angle
    "BF": (0.0, "half"),
}

_SIMULATION_METHODS = ("prism", "multislice", "incoherent")


def wavelength(energy):
    """Relativistic electron wavelength in Å for an energy in eV.

    Examples
    --------
    >>> round(wavelength(80e3), 5)
    0.04176
    """
    m0c2 = 510998.95  # eV
    hc = 12398.4198  # eV Å
    return hc / np.sqrt(energy * (2 * m0c2 + energy))


def _smooth_size(n):
    """Smallest 2,3,5-smooth integer >= n (sizes abTEM's FFTs like)."""
    n = int(np.ceil(n))
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _fourier_upsample(image, factor, shape):
    """Upsample a scan by an integer factor with mirrored borders, then crop to ``shape``.

    ``image[i, j]`` is the signal at ``(i, j) * s``; the result at ``(i, j) * s / factor``.
    """
    if factor == 1:
        return image[: shape[0], : shape[1]]
    mirrored = np.concatenate([image, image[::-1]], axis=0)
    mirrored = np.concatenate([mirrored, mirrored[:, ::-1]], axis=1)
    up = resample(mirrored, mirrored.shape[0] * factor, axis=0)
    up = resample(up, mirrored.shape[1] * factor, axis=1)
    return up[: shape[0], : shape[1]]


class MultisliceSimulator(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Simulate annular dark-field (and bright-field) STEM images of atomic structures.

    Parameters
    ----------
    pixel_size : float, default=0.1
        Output pixel size in Å/px.
    energy : float, default=80e3
        Beam energy in eV (1 keV to 1 MeV).
    semiangle_cutoff : float, default=25.0
        Probe convergence semi-angle in mrad.
    defocus : float, default=0.0
        Probe defocus in Å (positive = underfocus, abTEM's convention).
    Cs : float, default=0.0
        Spherical aberration in Å (e.g. ``1e4`` for 1 µm); 0 models an aberration-corrected probe.
    detector : {"HAADF", "MAADF", "ABF", "BF"} or tuple of float, default="HAADF"
        Collection angles: a preset of :data:`DETECTORS` or ``(inner, outer)`` in mrad.
    slice_thickness : float, default=1.0
        Multislice slice thickness in Å.
    potential_sampling : float or "auto", default="auto"
        Real-space sampling of the potential in Å; "auto" picks the coarsest sampling whose
        anti-aliased angular range covers the detector's outer angle.
    frozen_phonons : int, default=0
        Number of frozen-phonon configurations (0 = static lattice). Cost grows linearly.
    phonon_sigma : float, default=0.08
        Root-mean-square thermal displacement in Å of the frozen phonons.
    method : {"prism", "multislice", "incoherent"}, default="prism"
        Simulation algorithm (see the module notes on their accuracy).
    prism_window : float, default=10.0
        Smallest probe window in Å for PRISM's interpolation factor (the cell size divided by
        the factor). 10 Å keeps images within r > 0.9999 of multislice at 80 kV, 25 mrad
        (largest pixel error 4 % of the maximum); raise it for larger probes (high defocus, Cs).
    memory : str, joblib.Memory or None, default=None
        Cache simulated images on disk (a directory or a Memory), keyed by structure and
        settings, so a dataset is simulated once. Not used with ``scheduler="distributed"``
        (the workers may not share a disk).
    n_jobs : int, default=1
        Threads used by dask for one image (multislice/PRISM) or parallel images (incoherent).
    scheduler : {"threads", "synchronous", "distributed"}, default="threads"
        Dask scheduler for multislice/PRISM. "distributed" sends the whole batch to the
        current :class:`dask.distributed.Client` in one graph (see docs/scaling.rst).
    progress : bool, default=True
        Show a progress bar over the structures.
    random_state : int, RandomState instance or None, default=None
        Seeds the frozen-phonon displacements.

    Notes
    -----
    A structure's image covers ``atoms.info["scan_region"] = (y0, x0, height, width)`` (Å) when
    present (as made by :func:`sklatom.structures.make_structure`), else the whole cell. Image
    pixel ``(i, j)`` is the probe at ``(y0 + i * pixel_size, x0 + j * pixel_size)``; the image
    has ``round(height / pixel_size)`` rows. Cells must be orthogonal (use
    :func:`abtem.orthogonalize_cell` first); atoms must lie inside the cell.

    Examples
    --------
    >>> from sklatom.structures import make_structure
    >>> atoms = make_structure("graphene", (6.0, 6.0), defects=None, random_state=0)
    >>> sim = MultisliceSimulator(method="incoherent", progress=False)
    >>> sim.transform([atoms]).shape
    (1, 60, 60)
    """

    def __init__(
        self,
        *,
        pixel_size=0.1,
        energy=80e3,
        semiangle_cutoff=25.0,
        defocus=0.0,
        Cs=0.0,
        detector="HAADF",
        slice_thickness=1.0,
        potential_sampling="auto",
        frozen_phonons=0,
        phonon_sigma=0.08,
        method="prism",
        prism_window=10.0,
        memory=None,
        n_jobs=1,
        scheduler="threads",
        progress=True,
        random_state=None,
    ):
        self.pixel_size = pixel_size
        self.energy = energy
        self.semiangle_cutoff = semiangle_cutoff
        self.defocus = defocus
        self.Cs = Cs
        self.detector = detector
        self.slice_thickness = slice_thickness
        self.potential_sampling = potential_sampling
        self.frozen_phonons = frozen_phonons
        self.phonon_sigma = phonon_sigma
        self.method = method
        self.prism_window = prism_window
        self.memory = memory
        self.n_jobs = n_jobs
        self.scheduler = scheduler
        self.progress = progress
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.input_tags.string = False
        tags.non_deterministic = False
        return tags

    def fit(self, X=None, y=None):
        """Check the settings; the simulator learns nothing. Returns self."""
        self._settings()
        return self

    # -- settings ---------------------------------------------------------------------------
    def _settings(self):
        """Validated physical settings as a plain dict (also the cache key)."""
        ps = check_pixel_size(self.pixel_size, "pixel_size", low=0.01, high=2.0)
        energy = _check_number(self.energy, "energy", 1e3, 1e6, "eV")
        alpha = _check_number(self.semiangle_cutoff, "semiangle_cutoff", 1.0, 100.0, "mrad")
        if self.method not in _SIMULATION_METHODS:
            raise ValueError(
                f"method={self.method!r} is unknown; expected one of {_SIMULATION_METHODS}"
            )
        inner, outer = _detector_angles(self.detector, alpha)
        lam = wavelength(energy)
        if self.potential_sampling == "auto":
            # abTEM keeps 2/3 of the Nyquist range after anti-aliasing: theta_max = lam / (3 h)
            sampling = min(0.1, lam / (3 * outer * 1e-3) * 0.98) if outer > 0 else 0.1
            sampling = min(sampling, lam / (3 * 2 * alpha * 1e-3))
        else:
            sampling = _check_number(self.potential_sampling, "potential_sampling",
                                     0.005, 0.5, "Å")
            reach = lam / (3 * sampling) * 1e3
            if outer > reach:
                raise ValueError(
                    f"potential_sampling={sampling} Å resolves scattering only up to "
                    f"{reach:.0f} mrad at {energy:g} eV, below the detector's outer angle "
                    f"{outer:g} mrad; use a finer sampling or 'auto'"
                )
        if self.method == "incoherent" and inner < alpha:
            raise ValueError(
                f"method='incoherent' models annular dark-field images only; the detector "
                f"{self.detector!r} starts at {inner:g} mrad, inside the probe's "
                f"{alpha:g} mrad bright-field disk. Use method='prism' or 'multislice'."
            )
        for name in ("defocus", "Cs"):
            _check_number(getattr(self, name), name, -1e6, 1e7, "Å")
        _check_number(self.slice_thickness, "slice_thickness", 0.1, 50.0, "Å")
        if not (isinstance(self.frozen_phonons, numbers.Integral) and self.frozen_phonons >= 0):
            raise ValueError(
                f"frozen_phonons must be a non-negative integer; got {self.frozen_phonons!r}"
            )
        if self.scheduler not in ("threads", "synchronous", "distributed"):
            raise ValueError(
                f"scheduler={self.scheduler!r}; expected 'threads', 'synchronous' or "
                "'distributed'"
            )
        return dict(
            pixel_size=ps, energy=float(energy), alpha=float(alpha), inner=inner, outer=outer,
            sampling=float(sampling), defocus=float(self.defocus), Cs=float(self.Cs),
            slice_thickness=float(self.slice_thickness), method=self.method,
            frozen_phonons=int(self.frozen_phonons), phonon_sigma=float(self.phonon_sigma),
            prism_window=float(self.prism_window),
        )

    def scan_sampling(self):
        """Probe-position spacing in Å used before interpolation: the largest integer
        fraction of ``pixel_size`` not above the probe's Nyquist sampling ``λ / (4 α)``."""
        s = self._settings()
        return s["pixel_size"] * _scan_factor(s)

    # -- simulation -------------------------------------------------------------------------
    def transform(self, X):
        """Simulate one image per structure.

        Parameters
        ----------
        X : ase.Atoms or sequence of ase.Atoms
            Structures in orthogonal cells, beam along z.

        Returns
        -------
        images : ndarray of shape (n_structures, height, width) or list of ndarray
            float32 images: the fraction of the incident probe intensity reaching the detector.
            A list when the structures' scan regions give different image sizes.
        """
        from ase import Atoms

        structures = [X] if isinstance(X, Atoms) else list(X)
        if not structures:
            raise ValueError("X holds no structures")
        for i, atoms in enumerate(structures):
            _check_structure(atoms, f"X[{i}]")
        settings = self._settings()
        rng = check_random_state(self.random_state)
        seeds = rng.randint(np.iinfo(np.int32).max, size=len(structures))
        if settings["frozen_phonons"] == 0:
            seeds[:] = 0  # static lattice: no randomness, and a stable cache key
        simulate = _simulate_one
        if self.memory is not None:
            from joblib import Memory

            memory = self.memory if isinstance(self.memory, Memory) else Memory(
                self.memory, verbose=0)
            simulate = memory.cache(_simulate_one, ignore=["scheduler", "n_jobs"])

        if settings["method"] != "incoherent" and self.scheduler == "distributed":
            images = _simulate_distributed(structures, settings, seeds)
        elif settings["method"] == "incoherent" and self.n_jobs not in (None, 1) \
                and len(structures) > 1:
            images = Parallel(n_jobs=self.n_jobs)(
                delayed(simulate)(_structure_key(a), settings, int(s), "synchronous", 1)
                for a, s in zip(structures, seeds)
            )
        else:
            images = []
            for atoms, seed in _progress(list(zip(structures, seeds)), self.progress,
                                         "simulating"):
                images.append(simulate(_structure_key(atoms), settings, int(seed),
                                       self.scheduler, self.n_jobs or 1))
        return stack_if_same_shape(images)


def _progress(items, show, desc):
    if not show:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)


def _check_number(value, name, low, high, unit):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number in {unit}; got {value!r}")
    if not (low <= value <= high):
        raise ValueError(
            f"{name}={value!r} {unit} is not physical here; expected {low:g} to {high:g} {unit}"
        )
    return float(value)


def _detector_angles(detector, alpha):
    if isinstance(detector, str):
        if detector not in DETECTORS:
            raise ValueError(
                f"detector={detector!r} is unknown; expected one of {sorted(DETECTORS)} or "
                "(inner, outer) in mrad"
            )
        angles = DETECTORS[detector]
    else:
        angles = detector
    try:
        inner, outer = angles
    except (TypeError, ValueError):
        raise ValueError(f"detector must be a name or (inner, outer) in mrad; got {detector!r}")
    scale = {"half": alpha / 2, "full": alpha}
    inner, outer = (scale.get(v, v) if isinstance(v, str) else v for v in (inner, outer))
    inner = _check_number(inner, "detector inner angle", 0.0, 500.0, "mrad")
    outer = _check_number(outer, "detector outer angle", 0.0, 500.0, "mrad")
    if outer <= inner:
        raise ValueError(f"detector outer angle {outer} mrad must exceed inner angle {inner}")
    return inner, outer


def _check_structure(atoms, name):
    from ase import Atoms

    if not isinstance(atoms, Atoms):
        raise TypeError(f"{name} must be an ase.Atoms; got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise ValueError(f"{name} is an empty structure: it has no atoms")
    # before the cell checks: a comparison with NaN is False, so NaN passes "outside the cell"
    pos = atoms.positions
    bad = np.flatnonzero(~np.all(np.isfinite(pos), axis=1))
    if len(bad):
        k = int(bad[0])
        raise ValueError(
            f"{name} has {len(bad)} atom(s) with NaN or infinite positions (first: atom {k}, "
            f"atomic number {int(atoms.numbers[k])}, at {pos[k].tolist()} Å); positions must be "
            "finite, in Å")
    numbers_ = atoms.numbers
    bad = np.flatnonzero((numbers_ < 1) | (numbers_ > 118))
    if len(bad):
        k = int(bad[0])
        raise ValueError(
            f"{name} has {len(bad)} atom(s) with an atomic number outside 1..118 (first: "
            f"atom {k}, atomic number {int(numbers_[k])}, at {pos[k].round(3).tolist()} Å); "
            "expected elements H (1) to Og (118)")
    cell = np.asarray(atoms.cell)
    lengths = atoms.cell.lengths()
    if np.any(lengths <= 0):
        raise ValueError(f"{name} has no cell (or a zero-length cell vector): {lengths}")
    if not np.allclose(cell, np.diag(np.diag(cell)), atol=1e-6):
        raise ValueError(
            f"{name} has a non-orthogonal cell {cell.round(3).tolist()}; STEM simulation "
            "needs an orthogonal cell: convert it with abtem.orthogonalize_cell(atoms) first"
        )
    size = np.diag(cell)
    outside = np.any((pos < -1e-6) | (pos > size + 1e-6), axis=1)
    if outside.any():
        raise ValueError(
            f"{name} has {int(outside.sum())} atoms outside its cell (first at "
            f"{pos[outside][0].round(3).tolist()} Å, cell {size.round(3).tolist()} Å); "
            "wrap them (atoms.wrap()) or enlarge the cell"
        )
    y0, x0, height, width = scan_region(atoms)
    if height <= 0 or width <= 0 or y0 < 0 or x0 < 0 or y0 + height > size[1] + 1e-6 \
            or x0 + width > size[0] + 1e-6:
        raise ValueError(
            f"{name}.info['scan_region']={(y0, x0, height, width)} Å is not inside the cell "
            f"{size[:2].round(3).tolist()} Å"
        )


def _structure_key(atoms):
    """A compact, picklable and hashable description of a structure (for caching)."""
    y0, x0, height, width = scan_region(atoms)
    return (
        tuple(atoms.numbers.tolist()),
        np.round(atoms.positions, 6).tobytes(),
        tuple(np.round(np.diag(np.asarray(atoms.cell)), 6).tolist()),
        (y0, x0, height, width),
    )


def _atoms_from_key(key):
    from ase import Atoms

    numbers_, positions, cell, region = key
    atoms = Atoms(numbers=list(numbers_), positions=np.frombuffer(positions).reshape(-1, 3),
                  cell=list(cell), pbc=True)
    atoms.info["scan_region"] = region
    return atoms


def _scan_factor(s):
    nyquist = wavelength(s["energy"]) / (4 * s["alpha"] * 1e-3)
    return max(1, int(np.floor(nyquist / s["pixel_size"] + 1e-9)))


def _output_shape(region, pixel_size):
    _, _, height, width = region
    shape = (int(round(height / pixel_size)), int(round(width / pixel_size)))
    if min(shape) < 1:
        raise ValueError(
            f"the scan region {height}x{width} Å is smaller than one pixel of {pixel_size} Å"
        )
    return shape


def _simulate_one(key, settings, seed, scheduler, n_jobs):
    """Simulate one structure given as a key from :func:`_structure_key` (cacheable)."""
    atoms = _atoms_from_key(key)
    if settings["method"] == "incoherent":
        return _simulate_incoherent(atoms, settings)
    measurement, factor, shape = _build_scan(atoms, settings, seed)
    kwargs = dict(progress_bar=False, scheduler=scheduler)
    if scheduler == "threads":
        kwargs["num_workers"] = n_jobs
    array = measurement.compute(**kwargs).array
    return _finish_scan(array, factor, shape)


def _finish_scan(array, factor, shape):
    scan = np.asarray(array, dtype=np.float64).T  # abTEM is [x, y]; images are [row, col]
    # a detected intensity is non-negative; interpolation can undershoot by a hair near zero
    return np.clip(_fourier_upsample(scan, factor, shape), 0, None).astype(np.float32)


def _build_scan(atoms, s, seed):
    """Lazy abTEM measurement of the scan, the upsampling factor and the output shape."""
    import abtem

    y0, x0, height, width = scan_region(atoms)
    shape = _output_shape((y0, x0, height, width), s["pixel_size"])
    factor = _scan_factor(s)
    step = s["pixel_size"] * factor
    # one probe position beyond the last pixel, so no output pixel lies in the mirror fold
    n_scan = ((shape[0] - 1) // factor + 2, (shape[1] - 1) // factor + 2)
    extent = np.diag(np.asarray(atoms.cell))[:2]
    gpts = tuple(_smooth_size(e / s["sampling"]) for e in extent)
    structure = atoms
    if s["frozen_phonons"] > 0:
        structure = abtem.FrozenPhonons(atoms, num_configs=s["frozen_phonons"],
                                        sigmas=s["phonon_sigma"], seed=seed)
    if s["method"] == "prism":
        window = max(s["prism_window"], 1.0)
        interpolation = tuple(max(1, int(e // window)) for e in extent)
        # PRISM needs the potential grid to divide evenly by the interpolation factor
        gpts = tuple(_smooth_size(g / f) * f for g, f in zip(gpts, interpolation))
    potential = abtem.Potential(structure, gpts=gpts, slice_thickness=s["slice_thickness"],
                                projection="infinite", parametrization="lobato")
    scan = abtem.GridScan(start=(x0, y0), end=(x0 + n_scan[1] * step, y0 + n_scan[0] * step),
                          gpts=(n_scan[1], n_scan[0]), endpoint=False)
    aberrations = {"C30": s["Cs"]} if s["Cs"] else {}
    detector = abtem.AnnularDetector(inner=s["inner"], outer=s["outer"])
    if s["method"] == "prism":
        smatrix = abtem.SMatrix(potential=potential, energy=s["energy"],
                                semiangle_cutoff=s["alpha"], interpolation=interpolation)
        ctf = abtem.CTF(semiangle_cutoff=s["alpha"], energy=s["energy"],
                        aberration_coefficients={"C10": -s["defocus"], **aberrations})
        measurement = smatrix.scan(scan=scan, detectors=detector, ctf=ctf)
    else:
        probe = abtem.Probe(semiangle_cutoff=s["alpha"], energy=s["energy"],
                            defocus=s["defocus"], aberrations=aberrations)
        measurement = probe.scan(potential, scan=scan, detectors=detector)
    return measurement, factor, shape


def _simulate_distributed(structures, settings, seeds):
    """Compute all scans in one dask graph on the current distributed client."""
    import dask
    from distributed import get_client

    client = get_client()  # raises a clear ValueError when no client is running
    lazy, meta = [], []
    for atoms, seed in zip(structures, seeds):
        measurement, factor, shape = _build_scan(atoms, settings, int(seed))
        lazy.append(measurement.array)
        meta.append((factor, shape))
    arrays = dask.compute(*lazy, scheduler=client.get)
    return [_finish_scan(a, f, sh) for a, (f, sh) in zip(arrays, meta)]


@lru_cache(maxsize=4096)
def _cross_section(number, energy, inner, outer, sampling):
    """Annular-detector cross-section in Å² of one isolated atom (plane-wave multislice)."""
    import abtem
    from ase import Atoms

    side = 8.0
    atoms = Atoms(numbers=[number], positions=[(side / 2, side / 2, 2.0)],
                  cell=[side, side, 4.0], pbc=True)
    gpts = _smooth_size(side / sampling)
    potential = abtem.Potential(atoms, gpts=gpts, projection="infinite", slice_thickness=4.0,
                                parametrization="lobato")
    exit_wave = abtem.PlaneWave(energy=energy).multislice(potential)
    detector = abtem.AnnularDetector(inner=inner, outer=outer)
    fraction = detector.detect(exit_wave).compute(progress_bar=False, scheduler="synchronous")
    return float(np.asarray(fraction.array)) * side * side


@lru_cache(maxsize=128)
def _probe_intensity(energy, alpha, defocus, Cs, sampling, size):
    """Probe intensity on a (size, size) grid of the given sampling, centred, summing to 1."""
    import abtem

    aberrations = {"C30": Cs} if Cs else {}
    probe = abtem.Probe(semiangle_cutoff=alpha, energy=energy, defocus=defocus,
                        aberrations=aberrations, gpts=(size, size), sampling=sampling)
    centre = (size // 2 * sampling, size // 2 * sampling)
    intensity = probe.build(centre).intensity().compute(progress_bar=False,
                                                        scheduler="synchronous").array
    intensity = np.asarray(intensity, dtype=np.float64).T
    return intensity / intensity.sum()


_ATOM_SPREAD = 0.1  # Å: Gaussian spread of an atom's scattering (thermal smearing, atom size)
#: Sampling in Å of the grid the incoherent image is rendered on (at most; finer when the
#: output pixel size is not a multiple of it).
_FINE_SAMPLING = 0.05


@lru_cache(maxsize=128)
def _incoherent_kernel(energy, alpha, defocus, Cs, sampling):
    """Probe intensity blurred by the atoms' spread on a grid of ``sampling`` Å, sum 1.

    The image of an atom of cross-section ``sigma`` (Å²) at the origin is
    ``sigma * kernel / sampling**2`` (a fraction of the probe) around the kernel's centre
    ``(size // 2, size // 2)``. Read-only: it is cached.
    """
    size = _smooth_size(max(64, int(np.ceil(12.0 / sampling))))
    psf = _probe_intensity(energy, alpha, defocus, Cs, sampling, size)
    kernel = ndimage.gaussian_filter(psf, _ATOM_SPREAD / sampling, mode="constant")
    kernel /= kernel.sum()
    kernel.setflags(write=False)
    return kernel


def _fine_grid(pixel_size):
    """Oversampling factor and sampling (Å) of the render grid for an output pixel size."""
    factor = max(1, int(np.ceil(pixel_size / _FINE_SAMPLING - 1e-9)))
    return factor, pixel_size / factor


def _cross_sections(numbers_, s):
    """Annular-detector cross-section (Å²) of each atom, computed once per element."""
    unique, inverse = np.unique(np.asarray(numbers_, dtype=int), return_inverse=True)
    # fine enough for the outer angle (abTEM keeps scattering up to lambda / (3 sampling))
    sampling = min(0.05, wavelength(s["energy"]) / (3 * s["outer"] * 1e-3) * 0.95)
    sampling = float(np.floor(sampling * 1e3) / 1e3)  # a stable cache key
    xs = np.array([_cross_section(int(z), s["energy"], s["inner"], s["outer"], sampling)
                   for z in unique])
    return xs[inverse] if len(unique) else np.zeros(0)


def _simulate_incoherent(atoms, s, weights=None):
    """Incoherent ADF image: atoms' cross-sections convolved with the probe intensity.

    ``weights`` (one per atom, default 1) scale each atom's cross-section: 0 leaves an atom out,
    which :mod:`sklatom.groundtruth` uses to render parts of a structure on the same grid.
    """
    y0, x0, height, width = scan_region(atoms)
    shape = _output_shape((y0, x0, height, width), s["pixel_size"])
    # render on a grid fine enough for the probe and the atoms; sample it at the pixels
    factor, h = _fine_grid(s["pixel_size"])
    pad = int(np.ceil(6.0 / h))  # probe tails reach a few Å
    fine = (shape[0] * factor + 2 * pad, shape[1] * factor + 2 * pad)
    rows = (atoms.positions[:, 1] - y0) / h + pad
    cols = (atoms.positions[:, 0] - x0) / h + pad
    w = _cross_sections(atoms.numbers, s) / (h * h)
    if weights is not None:
        w = w * np.asarray(weights, dtype=np.float64)
    grid = _bin_bilinear(fine, rows, cols, w)
    kernel = _incoherent_kernel(s["energy"], s["alpha"], s["defocus"], s["Cs"], h)
    image = _fft_convolve_centered(grid, kernel)
    image = image[pad:pad + shape[0] * factor:factor, pad:pad + shape[1] * factor:factor]
    return np.clip(image, 0, None).astype(np.float32)  # FFT rounding dips a hair below 0


def _bin_bilinear(shape, rows, cols, weights):
    """Deposit weights at sub-pixel positions on a grid, split bilinearly over 4 pixels.

    The weighted centroid of every deposit is exactly its position; points outside the grid
    are dropped.
    """
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = rows - r0, cols - c0
    r0, c0 = r0.astype(np.intp), c0.astype(np.intp)
    grid = np.zeros(shape[0] * shape[1])
    for dr, dc, part in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                         (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        r, c = r0 + dr, c0 + dc
        ok = (r >= 0) & (r < shape[0]) & (c >= 0) & (c < shape[1])
        grid += np.bincount(r[ok] * shape[1] + c[ok], weights[ok] * part[ok],
                            minlength=grid.size)
    return grid.reshape(shape)


def _fft_convolve_centered(image, kernel):
    """Linear convolution of image with a kernel centred at (size // 2, size // 2)."""
    shape = [next_fast_len(a + b - 1, real=True) for a, b in zip(image.shape, kernel.shape)]
    out = irfftn(rfftn(image, shape) * rfftn(kernel, shape), shape)
    k0, k1 = kernel.shape[0] // 2, kernel.shape[1] // 2
    return out[k0:k0 + image.shape[0], k1:k1 + image.shape[1]]


# --------------------------------------------------------------------------------------------
def spread_diffuse(image, fraction, length):
    """``image`` with ``fraction`` of its intensity spread by a Gaussian of ``length`` px.

    The total intensity is kept; a column's peak drops by about ``fraction`` and the spread
    part forms a plateau under the crystal it came from. Used by :class:`AcquisitionModel`
    (``diffuse``) and by :func:`sklatom.groundtruth.column_visibility`.
    """
    if not fraction:
        return image
    wide = ndimage.gaussian_filter(image, length, mode="reflect")
    return (1.0 - fraction) * image + fraction * wide


class AcquisitionModel(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Turn noise-free images into recorded ones: dose, noise, blur, scan distortion.

    Applied in the order a microscope does: probe-source blur and diffuse spread (the spot
    the probe makes in the specimen), scan distortion (jitter, drift and flyback of the probe
    positions: the blurred image sampled where the probe really was), a smooth background,
    shot noise at the given dose,
    scan-line noise, detector read noise, the detector's contrast and gamma, and last its
    saturation.

    Parameters
    ----------
    dose : float or None, default=1e6
        Electron dose in e/Å². Input images are fractions of the probe reaching the detector,
        so the expected counts of a pixel are ``dose * pixel_size**2 * image``. None keeps the
        noise-free intensities (no shot noise, output in the input's units).
    pixel_size : float, default=0.1
        Pixel size of the images in Å/px.
    read_noise : float, default=0.0
        Standard deviation of Gaussian detector noise, in counts.
    dark_counts : float, default=0.0
        Mean counts per pixel the detector records without any signal (dark current,
        stray electrons), Poisson distributed like the signal; ignored when ``dose`` is
        None. Vacuum at ``dark_counts=λ`` is flat Poisson noise of mean λ.
    pedestal : float, default=0.0
        A uniform offset with shot noise, as a multiple of the image's mean signal counts
        (a high detector dark level, diffuse scattering from a thick specimen): the columns
        then stand on a bright, noisy floor. Ignored when ``dose`` is None.
    blur : float, default=0.0
        Standard deviation in Å of a Gaussian blur (finite source size, defocus spread).
    diffuse : float, default=0.0
        Fraction of the signal spread over ``diffuse_length`` around where it arises (probe
        tails, beam spreading and thermal diffuse scattering in thick specimens), in [0, 1):
        the columns of a crystal or particle then stand on a bright plateau that follows its
        thickness, and their contrast drops by that fraction.
    diffuse_length : float, default=3.0
        Standard deviation in Å of the Gaussian that spreads the ``diffuse`` fraction.
    scan_jitter : float, default=0.0
        Standard deviation in Å of a random shift of each scan line along the fast scan
        direction (columns).
    drift : tuple of float, default=(0.0, 0.0)
        Linear drift during the frame in Å/row: (along rows, along columns); a random sign
        and up to this magnitude when ``random_drift=True``.
    random_drift : bool, default=True
        Draw each image's drift uniformly within ``±drift``.
    background : float, default=0.0
        Amplitude of a linear background gradient (and offset), relative to the image mean.
    background_texture : float, default=0.0
        Amplitude (standard deviation) of a slowly varying random background, relative to the
        image mean (thickness variations, contamination, detector drift). Never negative.
    background_length : float, default=20.0
        Correlation length of that background in Å.
    scan_noise : float, default=0.0
        Standard deviation of a random gain of each scan line (row), relative: streaks from
        probe-current and detector fluctuations during the scan.
    flyback : float, default=0.0
        Displacement in Å of the probe at the start of each scan line, decaying over
        ``flyback_length``: the scan coil has not settled after the flyback, so the first
        columns of every row are stretched. Random in [0, flyback] per image when
        ``random_drift=True``.
    flyback_length : float, default=3.0
        Decay length in Å of the flyback displacement.
    contrast : float, default=1.0
        Detector gain applied at the end.
    gamma : float, default=1.0
        Detector non-linearity: output = contrast * counts ** gamma.
    saturation : float or None, default=None
        Full scale of the detector in output units: larger values are clipped to it (flat,
        saturated pixels). None: no saturation.
    n_jobs : int or None, default=None
        Images recorded in parallel threads (None = 1). Every image draws its noise from its
        own seed, taken from ``random_state`` in order, so the output is the same for any
        ``n_jobs``.
    random_state : int, RandomState instance or None, default=None
        Seeds all random draws.

    Examples
    --------
    >>> import numpy as np
    >>> clean = np.full((1, 32, 32), 0.01, dtype=np.float32)
    >>> noisy = AcquisitionModel(dose=1e5, random_state=0).transform(clean)
    >>> round(float(noisy.mean()), 0)   # 1e5 e/Å² * 0.01 Å² * 0.01
    10.0
    """

    def __init__(
        self,
        *,
        dose=1e6,
        pixel_size=0.1,
        read_noise=0.0,
        dark_counts=0.0,
        pedestal=0.0,
        blur=0.0,
        diffuse=0.0,
        diffuse_length=3.0,
        scan_jitter=0.0,
        drift=(0.0, 0.0),
        random_drift=True,
        background=0.0,
        background_texture=0.0,
        background_length=20.0,
        scan_noise=0.0,
        flyback=0.0,
        flyback_length=3.0,
        contrast=1.0,
        gamma=1.0,
        saturation=None,
        n_jobs=None,
        random_state=None,
    ):
        self.dose = dose
        self.pixel_size = pixel_size
        self.read_noise = read_noise
        self.dark_counts = dark_counts
        self.pedestal = pedestal
        self.blur = blur
        self.diffuse = diffuse
        self.diffuse_length = diffuse_length
        self.scan_jitter = scan_jitter
        self.drift = drift
        self.random_drift = random_drift
        self.background = background
        self.background_texture = background_texture
        self.background_length = background_length
        self.scan_noise = scan_noise
        self.flyback = flyback
        self.flyback_length = flyback_length
        self.contrast = contrast
        self.gamma = gamma
        self.saturation = saturation
        self.n_jobs = n_jobs
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.non_deterministic = self.random_state is None
        return tags

    def fit(self, X=None, y=None):
        """Check the settings; nothing is learned. Returns self."""
        self._check_params()
        return self

    def _check_params(self):
        ps = check_pixel_size(self.pixel_size, "pixel_size", low=0.005, high=5.0)
        if self.dose is not None:
            _check_number(self.dose, "dose", 1e-3, 1e12, "e/Å²")
        for name in ("read_noise", "dark_counts", "pedestal", "blur", "scan_jitter",
                     "background",
                     "background_texture",
                     "scan_noise", "flyback"):
            _check_number(getattr(self, name), name, 0.0, 1e6, "(non-negative)")
        for name in ("background_length", "flyback_length", "diffuse_length"):
            _check_number(getattr(self, name), name, 1e-3, 1e6, "Å")
        _check_number(self.diffuse, "diffuse", 0.0, 0.99, "(a fraction of the signal)")
        if self.saturation is not None:
            _check_number(self.saturation, "saturation", 1e-12, 1e15, "(output units)")
        _check_number(self.contrast, "contrast", 1e-9, 1e12, "")
        _check_number(self.gamma, "gamma", 0.05, 20.0, "")
        try:
            drift = tuple(float(d) for d in self.drift)
            assert len(drift) == 2
        except (TypeError, ValueError, AssertionError):
            raise ValueError(f"drift must be (along rows, along cols) in Å/row; got "
                             f"{self.drift!r}") from None
        return ps, drift

    def transform(self, X):
        """Record the images.

        Parameters
        ----------
        X : ndarray of shape (n_images, height, width) or list of ndarray
            Noise-free images (detector fraction, non-negative).

        Returns
        -------
        images : ndarray of shape (n_images, height, width) float32, or list
        """
        return self.transform_with_coordinates(X, None)[0]

    def transform_with_coordinates(self, X, coordinates):
        """Record the images and move ground-truth coordinates with the scan distortion.

        Parameters
        ----------
        X : ndarray of shape (n_images, height, width) or list of ndarray
            Noise-free images.
        coordinates : list of ndarray of shape (k_i, 2 + m) or None
            Per image, rows of (row, col, ...) in pixels; extra columns are kept.

        Returns
        -------
        images : ndarray of shape (n_images, height, width) float32, or list
        coordinates : list of ndarray or None
            Where each atom appears in the distorted image.
        """
        ps, drift = self._check_params()
        images = check_image_batch(X, "X", dtype=np.float64)
        if coordinates is not None and len(coordinates) != len(images):
            raise ValueError(
                f"coordinates has {len(coordinates)} entries for {len(images)} images"
            )
        if self.dose is not None:
            for i, image in enumerate(images):
                if np.any(image < 0):
                    raise ValueError(f"X[{i}] has negative intensities; shot noise needs "
                                     "non-negative images")
        # one seed per image, drawn up front: image i gets the same noise whatever n_jobs is
        seeds = check_random_state(self.random_state).randint(np.iinfo(np.int32).max,
                                                              size=len(images))
        args = [(image, None if coordinates is None else coordinates[i], seed, ps, drift)
                for i, (image, seed) in enumerate(zip(images, seeds))]
        done = map_items(self._record_one, args, self.n_jobs, prefer="threads")
        out_images = [image for image, _ in done]
        out_coords = None if coordinates is None else [c for _, c in done]
        return stack_if_same_shape(out_images), out_coords

    def _record_one(self, image, coords, seed, ps, drift):
        """One recorded image (float32) and its moved coordinates (or None)."""
        rng = np.random.RandomState(seed)
        d = np.array(drift) * (rng.uniform(-1, 1, 2) if self.random_drift else 1.0)
        jitter = rng.normal(0, self.scan_jitter, image.shape[0]) if self.scan_jitter else \
            np.zeros(image.shape[0])
        flyback = self.flyback * (rng.uniform() if self.random_drift else 1.0)
        # blur and diffuse spread belong to the probe's interaction with the specimen: the
        # scan then samples that image at displaced probe positions, so a jittered line stays
        # sharp-edged (ragged columns, as recorded) instead of being smoothed by the blur
        if self.blur:
            image = ndimage.gaussian_filter(image, self.blur / ps, mode="reflect")
        if self.diffuse:
            image = spread_diffuse(image, self.diffuse, self.diffuse_length / ps)
        image, coords = self._distort(image, None if coords is None else
                                      np.asarray(coords, dtype=float), d / ps, jitter / ps,
                                      flyback / ps, self.flyback_length / ps)
        if self.background:
            image = image + self._background(image, rng)
        if self.background_texture:
            from .scenes import smooth_field

            field = smooth_field(image.shape, self.background_length / ps, rng)
            image = image + np.clip(self.background_texture * field * image.mean(),
                                    -image, None)
        if self.dose is not None:
            expected = np.clip(image, 0, None) * self.dose * ps * ps
            expected += self.dark_counts + self.pedestal * float(expected.mean())
            image = rng.poisson(expected).astype(np.float64)
        if self.scan_noise:
            image = image * np.clip(1 + rng.normal(0, self.scan_noise, (image.shape[0], 1)),
                                    0, None)
        if self.read_noise:
            image = image + rng.normal(0, self.read_noise, image.shape)
        if self.gamma != 1.0:
            image = np.sign(image) * np.abs(image) ** self.gamma
        image = self.contrast * image
        if self.saturation is not None:
            image = np.minimum(image, self.saturation)
        return image.astype(np.float32), coords

    def _background(self, image, rng):
        h, w = image.shape
        angle = rng.uniform(0, 2 * np.pi)
        rr, cc = np.mgrid[0:h, 0:w]
        ramp = (np.cos(angle) * rr / max(h - 1, 1) + np.sin(angle) * cc / max(w - 1, 1))
        return self.background * image.mean() * (ramp - ramp.min())

    @staticmethod
    def _distort(image, coords, drift_px, jitter_px, flyback_px=0.0, flyback_length_px=1.0):
        """Resample the image at distorted probe positions; move coordinates too.

        The probe meant for pixel (r, c) lands at
        ``(r * (1 + dr), c + r * dc + jitter[r] - flyback * exp(-c / flyback_length))``.
        """
        if not np.any(drift_px) and not np.any(jitter_px) and not flyback_px:
            return image, coords
        h, w = image.shape
        rr, cc = np.mgrid[0:h, 0:w].astype(np.float64)
        src_r = rr * (1 + drift_px[0])
        src_c = cc + rr * drift_px[1] + jitter_px[:, None] \
            - flyback_px * np.exp(-cc / flyback_length_px)
        out = ndimage.map_coordinates(image, [src_r, src_c], order=3, mode="reflect")
        if coords is not None and len(coords):
            coords = coords.copy()
            row = coords[:, 0] / (1 + drift_px[0])
            target = coords[:, 1] - row * drift_px[1] - np.interp(row, np.arange(h), jitter_px)
            col = target.copy()
            if flyback_px:  # solve c - flyback * exp(-c / length) = target (monotone in c)
                for _ in range(30):
                    e = flyback_px * np.exp(-col / flyback_length_px)
                    col = col - (col - e - target) / (1 + e / flyback_length_px)
            coords[:, 0] = row
            coords[:, 1] = col
        return out, coords
