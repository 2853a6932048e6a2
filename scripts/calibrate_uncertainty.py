"""Calibrate the uncertainty of a segmentation model and measure it (sklatom.uncertainty).

    python scripts/calibrate_uncertainty.py                       # the shipped "general" model
    python scripts/calibrate_uncertainty.py --model my.safetensors --realdata ../shared/realdata
    python scripts/calibrate_uncertainty.py --quick               # a smoke run (minutes)

Rerun it whenever the model changes: everything model-specific is fitted here.

1. **Held-out simulated images** of every lattice (at the test doses of
   ``scripts/train_pretrained.py``) and every held-out scene kind of that script
   (``HELD_OUT_SCENES``), drawn with seeds the training script uses for nothing (its test sets
   use 1000-5120): a *fit* set (seeds from 7000) and a separate *evaluation* set (seeds from
   8000).
2. Each image goes through ``AtomFinder(uncertainty=True)``'s ensemble (the 8 flips and
   rotations); every found atom is labelled right (a true atom within 0.5 Å), wrong, or left
   out (at a "don't care" column, or in the 0.5 Å edge band), as the model card scores.
3. **Fit** on the fit set: the existence probability (logistic regression of the ensemble's
   per-atom features), the position sigma (a log-linear model of the squared error, by
   maximum likelihood) and the out-of-distribution reference (the Gaussian of
   ``sklatom.uncertainty.ood_vector`` on the crystalline kinds, its distance scaled by its
   99th percentile on other images of them).
4. **Measure** on the evaluation set: expected calibration error (ECE, 10 equal-width bins)
   of the existence probability per lattice and scene kind, RMS of (error / sigma) per axis,
   the OOD scores of each kind, flat noise and vacuum; with ``--realdata``, the ROC AUC of the
   existence probability separating right from wrong detections on real images (scored only:
   nothing is fitted on them).

Writes ``<model>.calibration.json`` beside the model (loaded by
:func:`sklatom.uncertainty.load_calibration`; plain JSON, no code) with the metrics inside.
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for path in (REPO, HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

from train_pretrained import (HELD_OUT_SCENES, TEST_DOSES, lattice_test_set,  # noqa: E402
                              scene_test_set)

from sklatom.exceptions import ImageQualityWarning  # noqa: E402
from sklatom.finder import AtomFinder  # noqa: E402
from sklatom.metrics import EDGE_BAND, TOLERANCE, detection_outcomes  # noqa: E402
from sklatom.exceptions import OutOfDistributionWarning  # noqa: E402
from sklatom.uncertainty import (N_TRANSFORMS, OOD_THRESHOLD, Calibration,  # noqa: E402
                                 _model_file, _ood_parts, _raw_ensemble, atom_features,
                                 calibration_path, ood_vector, weights_fingerprint)

#: Seeds of the fit and evaluation sets.
FIT_SEED, EVAL_SEED = 7000, 8000
#: Held-out kinds without a crystal: the out-of-distribution reference leaves them out.
OUT_OF_SCOPE = ("vacuum", "amorphous support", "single atoms on a support")
#: Confident atoms per nm² below which an image shows no crystal the model recognises (a
#: choice, not fitted: the sparsest crystalline test images show 2-3 per nm², lattices 6-38).
MIN_ATOM_DENSITY = 1.0
PIXEL_SIZE = 0.1


def simulate(seed, n_lattice, n_scene, log=print):
    """Held-out images: a list of dicts (set, kind, image, pixel size, truth, don't care)."""
    out = []
    for lattice, _, x, c, u in lattice_test_set(n_lattice, seed, TEST_DOSES):
        out.append(dict(group="lattice", kind=lattice, image=x, pixel_size=PIXEL_SIZE,
                        truth=c, dont_care=u))
    log(f"  {len(out)} lattice images")
    for k, name in enumerate(HELD_OUT_SCENES):
        X, coords, uncertain, ps = scene_test_set(name, n_scene, seed + 100 + 10 * k)
        for x, c, u in zip(X, coords, uncertain):
            out.append(dict(group="scene", kind=name, image=x, pixel_size=ps, truth=c,
                            dont_care=u))
    log(f"  {len(out)} images with the scenes")
    return out


def collect(finder, items, log=print):
    """Run the ensemble on each item; add the raw features and the outcomes of its atoms."""
    seg = finder.segmenter_
    t0 = time.time()
    for n, item in enumerate(items):
        seg.set_params(pixel_size=item["pixel_size"])
        try:
            raw = _raw_ensemble(seg, finder.peaks_, [item["image"]])[0]
        finally:
            seg.set_params(pixel_size=None)
        item["raw"] = raw
        if item.get("truth") is not None:
            outcome, index = detection_outcomes(
                raw.coords, item["truth"], TOLERANCE, item["pixel_size"], item["dont_care"],
                EDGE_BAND, item["image"].shape)
            item["outcome"] = outcome
            err = np.full((len(outcome), 2), np.nan)
            right = outcome == 1
            err[right] = raw.coords[right, :2] - np.asarray(item["truth"])[index[right], :2]
            item["error_px"] = err
        if (n + 1) % 20 == 0:
            log(f"  {n + 1}/{len(items)} images ({time.time() - t0:.0f} s)")
    return items


# --------------------------------------------------------------------------------------------
# fitting
# --------------------------------------------------------------------------------------------
def has_atoms(item):
    return item.get("truth") is not None and len(item["truth"]) > 0


def fit_ood(items, n_components):
    """The out-of-distribution reference from the in-scope images of the fit set (kinds
    outside :data:`OUT_OF_SCOPE`): the principal axes of the log pooled bottleneck features
    and the Gaussian of :func:`~sklatom.uncertainty.ood_vector` on the even-numbered images,
    the distance scale (99th percentile) on the odd-numbered ones."""
    inside = [it for it in items
              if it["kind"] not in OUT_OF_SCOPE and it["raw"].features is not None]
    a, b = inside[0::2], inside[1::2]
    logs = np.log(np.array([it["raw"].features for it in a]) + 1e-3)
    feature_mean = logs.mean(axis=0)
    _, _, vt = np.linalg.svd(logs - feature_mean, full_matrices=False)
    components = vt[:n_components]
    v = np.array([ood_vector(it["raw"], feature_mean, components) for it in a])
    cov = np.cov(v.T) + 1e-6 * np.eye(v.shape[1])
    ood = dict(feature_mean=feature_mean.tolist(), feature_components=components.tolist(),
               mean=v.mean(axis=0).tolist(), precision=np.linalg.inv(cov).tolist(), scale=1.0,
               min_atom_density=MIN_ATOM_DENSITY, n_images=[len(a), len(b)])
    d = [_ood_parts(ood, it["raw"], it["pixel_size"])[1] for it in b]
    ood["scale"] = float(np.percentile(d, 99))
    return ood


def atom_rows(items, cal):
    """Per counted atom: features, outcome, squared error (Å², NaN if wrong), kind."""
    F, y, d2, kind = [], [], [], []
    for it in items:
        if "outcome" not in it:
            continue
        raw, ps = it["raw"], it["pixel_size"]
        score = cal.ood_score(raw, ps)
        counted = it["outcome"] >= 0
        F.append(atom_features(raw, ps, score)[counted])
        y.append(it["outcome"][counted])
        d2.append((np.sum(it["error_px"] ** 2, axis=1) * ps ** 2)[counted])
        kind += [it["kind"]] * int(counted.sum())
    return np.concatenate(F), np.concatenate(y), np.concatenate(d2), np.array(kind)


def fit_existence(F, y, kind):
    """Logistic regression; each kind weighs as much as the mean kind (so the few atoms of
    supports and single atoms are calibrated too)."""
    from sklearn.linear_model import LogisticRegression

    kinds, inverse, counts = np.unique(kind, return_inverse=True, return_counts=True)
    weight = (len(y) / len(kinds)) / counts[inverse]
    mu, sd = F.mean(axis=0), F.std(axis=0) + 1e-9
    lr = LogisticRegression(C=10.0, max_iter=5000).fit((F - mu) / sd, y, sample_weight=weight)
    coef = lr.coef_[0] / sd
    return dict(coef=coef.tolist(), intercept=float(lr.intercept_[0] - coef @ mu))


def fit_sigma(F, d2):
    """``log sigma^2 = F w + b`` by maximum likelihood of the 2-D position errors (per-axis
    sigma: ``-log p = log sigma^2 + d^2 / (2 sigma^2)`` up to a constant), lightly ridged."""
    from scipy.optimize import minimize

    mu, sd = F.mean(axis=0), F.std(axis=0) + 1e-9
    Z = np.column_stack([(F - mu) / sd, np.ones(len(F))])

    def nll(w):
        s = Z @ w
        e = d2 * np.exp(-s) / 2
        return np.mean(s + e) + 1e-4 * w[:-1] @ w[:-1], Z.T @ (1 - e) / len(F) + np.r_[
            2e-4 * w[:-1], 0]

    w0 = np.r_[np.zeros(F.shape[1]), np.log(np.mean(d2) / 2)]
    w = minimize(nll, w0, jac=True, method="L-BFGS-B").x
    coef = w[:-1] / sd
    return dict(coef=coef.tolist(), intercept=float(w[-1] - coef @ mu))


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------
def ece(p, y, n_bins=10):
    """Expected calibration error: sum over equal-width bins of |mean p - mean y| weighted by
    the bin's share of the atoms."""
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        m = bins == b
        total += m.sum() * abs(p[m].mean() - y[m].mean())
    return float(total / len(p))


def measure(cal, items, reference_kinds):
    """ECE per kind, RMS(error / sigma), OOD scores per kind on the evaluation set."""
    F, y, d2, kind = atom_rows(items, cal)
    p = cal.existence_probability(F)
    sigma = cal.sigma_A(F)
    right = y == 1
    z2 = d2[right] / (2 * sigma[right] ** 2)
    per_kind = {}
    for k in dict.fromkeys(kind):
        m = kind == k
        zk = d2[m & right] / (2 * sigma[m & right] ** 2)
        per_kind[str(k)] = dict(
            n_atoms=int(m.sum()), fraction_right=round(float(y[m].mean()), 4),
            mean_existence=round(float(p[m].mean()), 4), ece=round(ece(p[m], y[m]), 4),
            rms_error_over_sigma=round(float(np.sqrt(zk.mean())), 3) if len(zk) else None,
            median_sigma_A=round(float(np.median(sigma[m])), 4),
            rms_error_A=round(float(np.sqrt(np.mean(d2[m & right]) / 2)), 4)
            if (m & right).any() else None)
    ood = {}
    for it in items:
        ood.setdefault(it["kind"], []).append(cal.ood_score(it["raw"], it["pixel_size"]))
    return dict(
        ece_all=round(ece(p, y), 4), n_atoms=int(len(y)),
        rms_error_over_sigma=round(float(np.sqrt(z2.mean())), 3),
        per_kind=per_kind,
        ood_score={k: dict(min=round(float(np.nanmin(v)), 3) if np.isfinite(v).any() else None,
                           median=round(float(np.nanmedian(v)), 3)
                           if np.isfinite(v).any() else None,
                           max=round(float(np.nanmax(v)), 3) if np.isfinite(v).any() else None,
                           fraction_above=round(float(np.mean(np.array(v) > OOD_THRESHOLD)), 3))
                   for k, v in ood.items()})


def flat_noise(finder, counts=(1, 3, 10, 30, 100, 300, 1000), seed=0):
    """OOD score and the largest existence probability in flat Poisson noise, and vacuum."""
    rng = np.random.default_rng(seed)
    out = {}
    for lam in counts:
        x = rng.poisson(lam, (1, 128, 128)).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OutOfDistributionWarning)
            a = finder.analyse(x, PIXEL_SIZE)[0]
        out[f"noise {lam} counts/px"] = dict(
            ood_score=round(a.uncertainty.ood_score, 3), n_atoms=len(a.coords),
            max_existence=round(float(a.atoms["existence"].max()), 4) if len(a.coords)
            else None)
    return out


def time_ratio(finder, n_repeat=5):
    """Seconds of one prediction and of the 8-member ensemble on a 256 x 256 px image, and
    their ratio (same run, same threads)."""
    from sklatom.datasets import make_lattice_images

    X, _, _ = make_lattice_images(1, "MoS2", shape=(256, 256), random_state=0)
    seg = finder.segmenter_
    seg.predict_proba(X)
    seg._ensemble_items(X, N_TRANSFORMS, features=True)
    t1 = t8 = 0.0
    for _ in range(n_repeat):  # interleaved, so a busy machine slows both alike
        t0 = time.perf_counter()
        seg.predict_proba(X)
        t1 += time.perf_counter() - t0
        t0 = time.perf_counter()
        seg._ensemble_items(X, N_TRANSFORMS, features=True)
        t8 += time.perf_counter() - t0
    return dict(single_seconds=round(t1 / n_repeat, 4), ensemble_seconds=round(t8 / n_repeat, 4),
                ratio=round(t8 / t1, 2), image="256 x 256 px", n_repeat=n_repeat,
                threads=torch.get_num_threads())


def real_auc(finder, root):
    """ROC AUC of the existence probability (and of the confidence) separating right from
    wrong detections on real images (benchmarks/bench_real.py's protocol): scored only."""
    from sklearn.metrics import roc_auc_score

    from benchmarks.bench_real import find_sets, in_region, load_set, set_tolerance

    p_all, c_all, y_all, per_set = [], [], [], {}
    for name, folder in find_sets(root).items():
        images = load_set(folder)
        tol, _ = set_tolerance(name, images)
        p_set, y_set, ood = [], [], []
        for im in images:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OutOfDistributionWarning)
                a = finder.analyse(im.image[np.newaxis], im.pixel_size)[0]
            keep = in_region(a.coords[:, :2], im.region)
            true = im.coords[in_region(im.coords, im.region)]
            outcome, _ = detection_outcomes(a.coords[keep, :2], true, tol, im.pixel_size)
            p_set.append(a.atoms["existence"].to_numpy()[keep])
            c_all.append(a.confidence[keep])
            y_set.append(outcome)
            ood.append(a.uncertainty.ood_score)
        p, y = np.concatenate(p_set), np.concatenate(y_set)
        p_all.append(p)
        y_all.append(y)
        per_set[name] = dict(n_images=len(images), n_right=int(y.sum()),
                             n_wrong=int((y == 0).sum()),
                             mean_existence_right=round(float(p[y == 1].mean()), 3)
                             if (y == 1).any() else None,
                             mean_existence_wrong=round(float(p[y == 0].mean()), 3)
                             if (y == 0).any() else None,
                             ood_score_median=round(float(np.nanmedian(ood)), 3))
    p, c, y = np.concatenate(p_all), np.concatenate(c_all), np.concatenate(y_all)
    ok = len(np.unique(y)) == 2
    return dict(roc_auc_existence=round(float(roc_auc_score(y, p)), 4) if ok else None,
                roc_auc_confidence=round(float(roc_auc_score(y, c)), 4) if ok else None,
                n_right=int(y.sum()), n_wrong=int((y == 0).sum()), per_set=per_set)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="general",
                        help="pretrained name or .safetensors file (default: general)")
    parser.add_argument("--n-lattice", type=int, default=3,
                        help="images per lattice in each set (doses cycle)")
    parser.add_argument("--n-scene", type=int, default=4, help="images per scene kind")
    parser.add_argument("--realdata", default=None,
                        help="folder of real images with references (benchmarks/bench_real.py"
                             " format): scored only, never fitted on")
    parser.add_argument("--cache", default=None, help="a .pkl file to keep the collected "
                        "features in and reuse (for development)")
    parser.add_argument("--n-components", type=int, default=4,
                        help="principal axes of the out-of-distribution reference")
    parser.add_argument("--out", default=None,
                        help="calibration file (default: <model>.calibration.json beside it)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    t_start = time.time()
    if args.quick:
        args.n_lattice, args.n_scene = 1, 2
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", ImageQualityWarning)  # saturated test sets say so per image
    finder = AtomFinder(args.model, device="cpu").fit()
    import pickle

    if args.cache and os.path.exists(args.cache):
        with open(args.cache, "rb") as f:
            data = pickle.load(f)
    else:
        t0 = time.time()
        data = {}
        for name, seed in (("fit", FIT_SEED), ("eval", EVAL_SEED)):
            print(f"simulating the {name} set", flush=True)
            data[name] = collect(finder, simulate(seed, args.n_lattice, args.n_scene))
        data["seconds"] = time.time() - t0
        if args.cache:
            with open(args.cache, "wb") as f:
                pickle.dump(data, f)
    print(f"collected in {data['seconds']:.0f} s", flush=True)
    cal = fit_calibration(finder, data, args.n_components)
    finder.set_params(uncertainty=True, calibration=cal).fit()
    metrics = dict(fit_set=measure(cal, data["fit"], None),
                   evaluation_set=measure(cal, data["eval"], None),
                   flat_noise=flat_noise(finder), time=time_ratio(finder))
    if args.realdata:
        metrics["real"] = real_auc(finder, args.realdata)
    metrics.update(
        command="python scripts/calibrate_uncertainty.py " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        seconds=round(time.time() - t_start),
        images=dict(fit=len(data["fit"]), evaluation=len(data["eval"])),
        seeds=dict(fit=FIT_SEED, evaluation=EVAL_SEED),
        protocol=f"a found atom is right within {TOLERANCE} Å of a true one; atoms in the "
                 f"{EDGE_BAND} Å edge band or at 'don't care' columns are left out; ECE with "
                 "10 equal-width bins; error/sigma per axis")
    cal.metrics = metrics
    out = args.out or calibration_path(_model_file(args.model))
    with open(out, "w") as f:
        f.write(cal.to_json())
    report(metrics)
    print(f"wrote {out}")
    return cal


def fit_calibration(finder, data, n_components):
    """The Calibration fitted on the fit set (and the reference images for the OOD score)."""
    ood = fit_ood(data["fit"], n_components)
    cal = Calibration(weights_fingerprint(finder.segmenter_), N_TRANSFORMS, {}, {}, ood, {})
    F, y, d2, kind = atom_rows(data["fit"], cal)
    cal.existence = fit_existence(F, y, kind)
    right = y == 1
    cal.sigma = fit_sigma(F[right], d2[right])
    return cal


def report(metrics):
    """Print the tables of the model card."""
    ev = metrics["evaluation_set"]
    print(f"\nevaluation set: ECE {ev['ece_all']:.3f} over {ev['n_atoms']} atoms; RMS "
          f"error/sigma {ev['rms_error_over_sigma']:.3f}")
    print(f"{'kind':36s} {'atoms':>6s} {'right':>6s} {'mean p':>7s} {'ECE':>6s} "
          f"{'err/sig':>7s} {'sigma Å':>8s} {'OOD median (max)':>17s}")
    for k, m in ev["per_kind"].items():
        o = ev["ood_score"].get(k, {})
        print(f"{k:36s} {m['n_atoms']:6d} {m['fraction_right']:6.3f} "
              f"{m['mean_existence']:7.3f} {m['ece']:6.3f} "
              f"{m['rms_error_over_sigma'] or float('nan'):7.3f} {m['median_sigma_A']:8.4f} "
              f"{o.get('median') or float('nan'):8.2f} ({o.get('max') or float('nan'):.2f})")
    for k, o in ev["ood_score"].items():
        if k not in ev["per_kind"]:
            print(f"{k:36s} (no atoms counted) OOD median {o['median']} max {o['max']}")
    for k, v in metrics["flat_noise"].items():
        print(f"{k}: OOD {v['ood_score']}, {v['n_atoms']} atoms, max existence "
              f"{v['max_existence']}")
    t = metrics["time"]
    print(f"time: one prediction {t['single_seconds']} s, ensemble {t['ensemble_seconds']} s, "
          f"ratio {t['ratio']}")
    if "real" in metrics:
        r = metrics["real"]
        print(f"real images: ROC AUC of existence {r['roc_auc_existence']} (of confidence "
              f"{r['roc_auc_confidence']}); {r['n_right']} right, {r['n_wrong']} wrong")
        for k, v in r["per_set"].items():
            print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
