"""Synthetic phantoms: in-memory 3D volumes with exact labels, the data medssl ships with instead of a download.

Two generators, each taking a cube size and a numpy ``Generator`` so that the caller owns reproducibility:

- :func:`lung_vessel_phantom`: a chest CT in Hounsfield units with a branching pulmonary vessel tree inside two lungs
  (label 1), and unlabelled distractors that a thresholding baseline gets wrong (nodules, airways with bright walls,
  a bright spine).
- :func:`brats_phantom`: a skull-stripped brain in four MR contrasts (t1, t1ce, t2, flair) with a glioma labelled in
  the BraTS 2018 convention: 1 necrotic core, 2 peritumoral edema, 4 enhancing tumour.

Both vary from case to case (anatomy, contrast, noise, blur, bias field) so that a network seeing few labelled cases
has something to generalise over. Arrays are indexed (x, y, z) in RAS order: x left to right, y posterior to anterior,
z inferior to superior. Everything is vectorised numpy / scipy.ndimage; the only Python loops run over tree segments
and blobs, never over voxels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medssl.checks import check_choice, check_in_range, check_type

__all__ = [
    "MIN_SIZE",
    "MAX_SIZE",
    "BRATS_MODALITIES",
    "BRATS_LABELS",
    "LUNG_VESSEL_LABELS",
    "VARIATIONS",
    "smooth_noise",
    "lung_vessel_phantom",
    "brats_phantom",
]

MIN_SIZE = 32
"""Smallest cube side: below it the thinnest vessels and the enhancing rim no longer fit on the grid."""
MAX_SIZE = 256
"""Largest cube side: beyond it one case takes more memory and time than a demo data set should."""

BRATS_MODALITIES = ("t1", "t1ce", "t2", "flair")
"""Order of the MR contrasts in :func:`brats_phantom`'s output and in synthetic BraTS datalists."""
BRATS_LABELS = {"0": "background", "1": "necrotic tumour core", "2": "peritumoral edema", "4": "enhancing tumour"}
"""Label values of :func:`brats_phantom`: BraTS 2018, as MONAI's ``ConvertToMultiChannelBasedOnBratsClasses`` wants."""
LUNG_VESSEL_LABELS = {"0": "background", "1": "vessel"}
"""Label values of :func:`lung_vessel_phantom`."""

_AIR_HU = -1000.0

# BraTS tissue classes as indices into the per-modality intensity tables below.
_BG, _CSF, _GM, _WM, _NEC, _EDEMA, _ENH = range(7)
# Relative intensity of each class per contrast (WM of t1 ~ 0.85). Chosen to reproduce the BraTS appearance: enhancing
# rim bright on t1ce, necrosis dark on t1ce and bright on t2, edema bright on t2 and flair, CSF suppressed on flair.
_BRATS_TABLE = {
    #        bg   csf   gm    wm    nec   edema enh
    "t1": (0.0, 0.30, 0.60, 0.85, 0.35, 0.55, 0.65),
    "t1ce": (0.0, 0.30, 0.62, 0.85, 0.25, 0.55, 1.35),
    "t2": (0.0, 1.00, 0.65, 0.45, 0.95, 0.85, 0.70),
    "flair": (0.0, 0.12, 0.65, 0.50, 0.55, 1.00, 0.80),
}
# Texture amplitude per class: tumour tissue is more heterogeneous than normal brain.
_BRATS_TEXTURE = np.array([0.0, 0.03, 0.04, 0.03, 0.10, 0.08, 0.12], dtype=np.float32)


VARIATIONS = ("case", "scanner")
"""How much :func:`lung_vessel_phantom` cases differ: ``case`` (anatomy, vessel contrast, blur and noise within one
scanner's range) or ``scanner`` (cases from different scanners and protocols, see :class:`_LungAppearance`)."""


@dataclass(frozen=True)
class _LungAppearance:
    """Ranges that :func:`lung_vessel_phantom` draws a case's appearance from (uniform, integers half-open).

    ``scanner`` widens ``case`` the way scans from several sites differ: the calibration of the reconstructed values
    (a gain about water and an offset, so that air and lung no longer sit at their nominal HU), the contrast phase
    (vessels from unenhanced, near soft tissue, to enhanced, well above it), the dose (noise), the reconstruction
    kernel (blur), and the patient (vessel calibre, the number of trees per lung, and how many nodules, the
    vessel-bright distractors, and how large). Its ranges are as wide as it takes for the demo's 30% labelled to end
    at least 0.1 Dice below all labelled (`medssl demo --gap`, benchmarks/RESULTS.md): with gains 0.75-1.3, offsets
    up to 200 HU, vessels to 250 HU and noise to 90 HU the two ended 0.075 apart.
    """

    vessel_hu: tuple[float, float] = (-100.0, 80.0)
    noise_sd: tuple[float, float] = (10.0, 50.0)
    blur: tuple[float, float] = (0.4, 0.9)
    trees: tuple[int, int] = (6, 10)
    nodules: tuple[int, int] = (1, 5)
    nodule_radius: tuple[float, float] = (0.025, 0.06)
    calibre: tuple[float, float] | None = None
    gain: tuple[float, float] | None = None
    offset_hu: tuple[float, float] | None = None


_APPEARANCE = {
    "case": _LungAppearance(),
    "scanner": _LungAppearance(
        vessel_hu=(-150.0, 300.0),
        noise_sd=(10.0, 110.0),
        blur=(0.4, 1.1),
        trees=(4, 12),
        nodules=(0, 14),
        nodule_radius=(0.02, 0.08),
        calibre=(0.75, 1.3),
        gain=(0.6, 1.5),
        offset_hu=(-300.0, 300.0),
    ),
}


def _check_size(size: int) -> int:
    check_type("size", size, (int, np.integer))
    check_in_range("size", int(size), MIN_SIZE, MAX_SIZE)
    return int(size)


def _check_rng(rng: np.random.Generator) -> np.random.Generator:
    return check_type("rng", rng, np.random.Generator)


def smooth_noise(shape: tuple[int, ...], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field with zero mean and unit standard deviation, varying over about ``scale`` voxels.

    White noise on a coarse grid is upsampled with a cubic spline, one axis at a time: the cost does not grow with
    ``scale`` (a gaussian filter of white noise would), and the random numbers drawn depend only on ``shape`` and
    ``scale``.

    Args:
        shape: output shape.
        scale: correlation length in voxels (> 0); a grid point is drawn every ``scale`` voxels.
        rng: source of randomness.

    Returns:
        float32 array of ``shape``.

    Raises:
        ValueError: ``scale`` is not positive.
    """
    check_in_range("scale", scale, 0, None, low_inclusive=False)
    coarse = tuple(max(4, int(math.ceil(s / scale)) + 1) for s in shape)
    out = rng.standard_normal(coarse).astype(np.float32)
    for axis, (n_out, n_in) in enumerate(zip(shape, coarse)):
        # Spline interpolation is linear in the data, so each axis is a small matrix product: far cheaper than a
        # 3D ndimage.zoom, which evaluates 4**3 spline taps per output voxel.
        out = np.moveaxis(np.tensordot(_upsample_matrix(n_out, n_in), out, axes=(1, axis)), 0, axis)
    std = float(out.std())
    return ((out - out.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def _upsample_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Matrix (n_out, n_in) of 1D cubic-spline upsampling, its columns the upsampled unit vectors."""
    eye = np.eye(n_in, dtype=np.float64)
    # grid_mode aligns the cells of both grids, so no edge shrinks or repeats.
    cols = [ndimage.zoom(e, n_out / n_in, order=3, mode="grid-mirror", grid_mode=True)[:n_out] for e in eye]
    return np.stack(cols, axis=1).astype(np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open grid of voxel-centre coordinates relative to the volume centre, float32, broadcastable to (x, y, z)."""
    c = (size - 1) / 2.0
    ax = np.arange(size, dtype=np.float32) - np.float32(c)
    return ax[:, None, None], ax[None, :, None], ax[None, None, :]


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else np.array([0.0, 0.0, 1.0])


def _perpendicular(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random unit vector perpendicular to the unit vector ``d``."""
    while True:
        v = rng.standard_normal(3)
        v -= v.dot(d) * d
        if np.linalg.norm(v) > 1e-6:
            return _unit(v)


def _segment_distance(
    shape: tuple[int, ...], a: np.ndarray, b: np.ndarray, ra: float, rb: float, margin: float
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray] | None:
    """Distance from the voxel centres around segment ``a``-``b`` to it, and the radius tapering from ``ra`` to ``rb``.

    Only the segment's bounding box (grown by the radius and ``margin``) is computed, which keeps rasterising a tree
    of thousands of thin segments cheap. Coordinates are in voxel indices.

    Returns:
        (bounding-box slices, distance, radius at the closest point), or None when the box misses the volume.
    """
    reach = max(ra, rb) + margin + 1.0
    lo = np.maximum(np.floor(np.minimum(a, b) - reach).astype(int), 0)
    hi = np.minimum(np.ceil(np.maximum(a, b) + reach).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None
    px = np.arange(lo[0], hi[0], dtype=np.float32)[:, None, None] - np.float32(a[0])
    py = np.arange(lo[1], hi[1], dtype=np.float32)[None, :, None] - np.float32(a[1])
    pz = np.arange(lo[2], hi[2], dtype=np.float32)[None, None, :] - np.float32(a[2])
    d = (b - a).astype(np.float32)
    length2 = float(d.dot(d))
    if length2 > 0:
        t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / np.float32(length2), 0.0, 1.0)
    else:
        t = np.zeros(np.broadcast_shapes(px.shape, py.shape, pz.shape), dtype=np.float32)
    dist = np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
    radius = np.float32(ra) + np.float32(rb - ra) * t
    return tuple(slice(int(l), int(h)) for l, h in zip(lo, hi)), dist, radius


def _coverage(dist: np.ndarray, radius: np.ndarray | float) -> np.ndarray:
    """Fraction of a voxel inside a tube of ``radius``: a one-voxel linear ramp centred on the surface.

    It is 0.5 exactly at ``dist == radius``, so ``coverage >= 0.5`` is the label ``dist <= radius`` and the image and
    label agree on where the boundary is, while the ramp gives thin tubes their partial-volume look.
    """
    return np.clip(radius + 0.5 - dist, 0.0, 1.0)


def _rasterise(
    shape: tuple[int, ...], segments: list[tuple[np.ndarray, np.ndarray, float, float]], grow: tuple[float, ...]
) -> list[np.ndarray]:
    """Partial-volume coverage of the union of tubes ``segments``, once per radius increase in ``grow`` (voxels).

    Growing the same tubes by a wall thickness gives a wall as the difference of two coverages.
    """
    fields = [np.zeros(shape, dtype=np.float32) for _ in grow]
    for a, b, ra, rb in segments:
        hit = _segment_distance(shape, a, b, ra, rb, max(grow))
        if hit is None:
            continue
        box, dist, radius = hit
        for field, extra in zip(fields, grow):
            np.maximum(field[box], _coverage(dist, radius + extra), out=field[box])
    return fields


def _grow_tree(
    root: np.ndarray,
    direction: np.ndarray,
    radius: float,
    rng: np.random.Generator,
    inside: np.ndarray,
    r_min: float,
    max_depth: int,
    length_per_radius: tuple[float, float] = (6.0, 11.0),
    child_ratio: tuple[float, float] = (0.72, 0.86),
    angle_deg: tuple[float, float] = (25.0, 55.0),
    tortuosity: float = 0.12,
    step: float = 5.0,
    max_segments: int = 20000,
) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    """Grow a bifurcating tree of tapering tubes from ``root`` as a list of segments ``(a, b, r_a, r_b)``.

    Each branch is a short polyline (pieces of at most ``step`` voxels with a little random bending), tapers by 10 %
    along its length, and splits in two children whose radii shrink by ``child_ratio`` and which leave at angles in
    ``angle_deg`` on opposite sides of a random plane. A branch whose end leaves ``inside`` stops, as does a child
    thinner than ``r_min``, so the finest branches are about one voxel wide.
    """
    segments: list[tuple[np.ndarray, np.ndarray, float, float]] = []
    stack = [(np.asarray(root, dtype=float), _unit(np.asarray(direction, dtype=float)), float(radius), 0)]
    shape = np.array(inside.shape)
    while stack and len(segments) < max_segments:
        start, d, r, depth = stack.pop()
        length = max(2.0, r * rng.uniform(*length_per_radius))
        pieces = max(1, int(math.ceil(length / step)))
        r_end = 0.9 * r
        p = start
        for k in range(pieces):
            d = _unit(d + rng.normal(0.0, tortuosity, 3))
            q = p + d * (length / pieces)
            segments.append((p, q, r + (r_end - r) * k / pieces, r + (r_end - r) * (k + 1) / pieces))
            p = q
        idx = np.round(p).astype(int)
        if depth >= max_depth or np.any(idx < 0) or np.any(idx >= shape) or not inside[tuple(idx)]:
            continue
        u = _perpendicular(d, rng)
        for sign in (1.0, -1.0):
            rc = r_end * rng.uniform(*child_ratio)
            theta = math.radians(rng.uniform(*angle_deg))
            if rc >= r_min:
                stack.append((p, _unit(math.cos(theta) * d + sign * math.sin(theta) * u), rc, depth + 1))
    return segments


def _ellipsoid_radius(x, y, z, centre, semi) -> np.ndarray:
    """Normalised ellipsoid radius: < 1 inside the ellipsoid with ``centre`` and semi-axes ``semi`` (voxels)."""
    return np.sqrt(
        ((x - np.float32(centre[0])) / np.float32(semi[0])) ** 2
        + ((y - np.float32(centre[1])) / np.float32(semi[1])) ** 2
        + ((z - np.float32(centre[2])) / np.float32(semi[2])) ** 2
    )


def lung_vessel_phantom(
    size: int, rng: np.random.Generator, return_regions: bool = False, variation: str = "case"
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A chest CT cube in Hounsfield units with a labelled pulmonary vessel tree.

    Air (-1000 HU) surrounds an elliptical body of textured soft tissue (~ +40 HU) holding a bright spine and two
    lungs (~ -850 HU, denser towards the back as in a supine scan). Each lung holds 6-9 bifurcating vessel trees
    rooted around its hilum that taper down to about one voxel in radius (vessel HU varies by case, always far above
    lung), plus distractors that are not labelled: nodule-like bright blobs and airways (dark lumen, bright wall). The
    image is blurred (partial volume, scanner resolution) and gets Gaussian noise. Anatomy, contrast, blur and noise
    vary with ``rng``; ``variation="scanner"`` also varies the scanner's calibration (gain and offset of every
    value), the contrast phase, dose, kernel, the vessels' calibre and count and the nodules' count and size, as
    cases from several sites do.

    Args:
        size: voxels per side of the cube, in [32, 256].
        rng: source of randomness; the same generator state gives the same phantom.
        return_regions: also return boolean masks of the anatomy, for tests and inspection.
        variation: one of :data:`VARIATIONS`. ``case`` draws exactly what earlier versions drew from ``rng``.

    Returns:
        ``(image, label)``: float32 HU image and uint8 vessel mask (1 = vessel, only inside the lungs), both
        ``(size, size, size)``; with ``return_regions`` a third item, a dict of boolean masks ``body``, ``lung``,
        ``nodule``, ``airway``, ``spine``.

    Raises:
        TypeError: ``size`` is not an int or ``rng`` is not a ``numpy.random.Generator``.
        ValueError: ``size`` is outside [32, 256].

    >>> image, label = lung_vessel_phantom(32, np.random.default_rng(0))
    >>> image.shape, label.dtype.name
    ((32, 32, 32), 'uint8')
    """
    size = _check_size(size)
    rng = _check_rng(rng)
    look = _APPEARANCE[check_choice("variation", variation, VARIATIONS)]
    shape = (size, size, size)
    x, y, z = _grid(size)
    u = rng.uniform
    # The scanner's draws come first and only when asked for, so that ``case`` phantoms stay what they were.
    calibre = u(*look.calibre) if look.calibre else 1.0
    gain = u(*look.gain) if look.gain else 1.0
    offset = u(*look.offset_hu) if look.offset_hu else 0.0

    # Body: an elliptic cylinder along z (the scan is cropped to the chest), slightly narrower at the top.
    body_a = u(0.42, 0.47) * size * (1.0 - 0.08 * (z / size + 0.5))
    body_b = u(0.30, 0.35) * size
    body = (x / body_a) ** 2 + (y / np.float32(body_b)) ** 2 < 1.0
    tissue_hu = u(25.0, 55.0)
    image = np.full(shape, _AIR_HU, dtype=np.float32)
    image[body] = (tissue_hu + u(8.0, 18.0) * smooth_noise(shape, size / 10, rng))[body]

    # Spine: a bright vertebral column posterior to the mediastinum, a classic false positive for intensity rules.
    spine_c = (u(-0.02, 0.02) * size, -0.75 * body_b)
    spine_r = max(2.0, u(0.05, 0.07) * size)
    spine = ((x - np.float32(spine_c[0])) ** 2 + (y - np.float32(spine_c[1])) ** 2 < spine_r**2) & body
    spine = np.broadcast_to(spine, shape)
    image[spine] = u(250.0, 600.0)

    # Lungs: two noisy-edged ellipsoids either side of the mediastinum, inside the body and clear of the spine.
    lung_scale = u(0.85, 1.1)
    outline = smooth_noise(shape, size / 6, rng)
    lung = np.zeros(shape, dtype=bool)
    hila = []
    for side in (-1.0, 1.0):
        semi = np.array([u(0.15, 0.19), u(0.22, 0.27), u(0.38, 0.46)]) * size * lung_scale
        centre = np.array([side * u(0.20, 0.24) * size, u(-0.03, 0.03) * size, u(-0.04, 0.04) * size])
        lung |= _ellipsoid_radius(x, y, z, centre, semi) ** 2 + 0.08 * outline < 1.0
        hila.append((side, centre, semi))
    inner_body = (x / (0.9 * body_a)) ** 2 + (y / np.float32(0.9 * body_b)) ** 2 < 1.0
    lung &= inner_body
    lung &= np.abs(x) > 0.05 * size
    lung &= ~spine
    # Dependent (posterior) lung is denser in a supine patient: a gradient of up to ~50 HU along y.
    lung_hu = u(-870.0, -820.0) + u(0.0, 50.0) * (0.5 - y / np.float32(size)) - 25.0
    lung_tex = lung_hu + u(10.0, 30.0) * smooth_noise(shape, size / 12, rng)
    image = np.where(lung, lung_tex, image).astype(np.float32)

    # Airways: trachea down the midline to a carina, a main bronchus to each hilum (kept inside the body), then a
    # small tree per lung (kept inside the lung, as real bronchi do not leave it).
    wall = max(0.8, u(0.008, 0.012) * size)
    r_trachea = max(1.2, u(0.03, 0.04) * size)
    top = np.array([0.0, 0.05 * size, size / 2.0 + 1.0]) + (size - 1) / 2.0
    carina = np.array([0.0, 0.05 * size, u(0.05, 0.15) * size]) + (size - 1) / 2.0
    central = [(top, carina, r_trachea, r_trachea)]
    peripheral = []
    for side, centre, semi in hila:
        hilum = centre + np.array([-side * 0.55 * semi[0], 0.0, 0.05 * size]) + (size - 1) / 2.0
        central.append((carina, hilum, 0.8 * r_trachea, 0.7 * r_trachea))
        for _ in range(int(rng.integers(1, 3))):
            direction = np.array([side * u(0.3, 1.0), u(-0.5, 0.5), u(-1.0, 1.0)])
            peripheral += _grow_tree(
                hilum, direction, 0.65 * r_trachea, rng, lung, r_min=0.9, max_depth=2, angle_deg=(25.0, 45.0)
            )
    mediastinum = inner_body & ~spine
    central_lumen, central_outer = _rasterise(shape, central, (0.0, wall))
    peripheral_lumen, peripheral_outer = _rasterise(shape, peripheral, (0.0, wall))
    airway_lumen = np.maximum(central_lumen * mediastinum, peripheral_lumen * lung)
    airway_outer = np.maximum(central_outer * mediastinum, peripheral_outer * lung)
    wall_hu = u(-150.0, 50.0)
    image = image * (1.0 - airway_outer) + wall_hu * airway_outer
    image = image * (1.0 - airway_lumen) + _AIR_HU * airway_lumen

    # Nodules: bright irregular blobs inside the lungs, unlabelled, of vessel-like intensity.
    nodule = np.zeros(shape, dtype=np.float32)
    lung_idx = np.flatnonzero(lung)
    blob_noise = smooth_noise(shape, max(2.0, size / 16), rng)
    for _ in range(int(rng.integers(*look.nodules))):
        if lung_idx.size == 0:
            break
        centre = np.array(np.unravel_index(int(rng.choice(lung_idx)), shape), dtype=float)
        radius = max(1.2, u(*look.nodule_radius) * size)
        hit = _segment_distance(shape, centre, centre, radius, radius, 0.3 * radius)
        if hit is not None:
            box, dist, rad = hit
            np.maximum(nodule[box], _coverage(dist, rad * (1.0 + 0.2 * blob_noise[box])), out=nodule[box])
    nodule *= lung
    image = image * (1.0 - nodule) + u(-50.0, 80.0) * nodule

    # Vessel trees: several per lung from around the hilum towards random targets within the lung, drawn last so
    # that the label is what the image shows where a vessel crosses a distractor.
    r_root = u(0.03, 0.04) * size * calibre
    segments = []
    for side, centre, semi in hila:
        hilum = centre + np.array([-side * 0.6 * semi[0], 0.0, 0.0]) + (size - 1) / 2.0
        for _ in range(int(rng.integers(*look.trees))):
            root = hilum + rng.normal(0.0, 0.03 * size, 3)
            target = centre + (size - 1) / 2.0 + semi * _unit(rng.standard_normal(3)) * u(0.5, 1.0)
            segments += _grow_tree(root, target - root, r_root * u(0.8, 1.1), rng, lung, r_min=0.7, max_depth=12)
    vessel = _rasterise(shape, segments, (0.0,))[0] * lung
    image = image * (1.0 - vessel) + u(*look.vessel_hu) * vessel
    label = (vessel >= 0.5).astype(np.uint8)

    # Scanner point-spread function, then quantum noise, then the scanner's calibration (a gain about water, 0 HU).
    image = ndimage.gaussian_filter(image, sigma=u(*look.blur), mode="nearest")
    image += rng.normal(0.0, u(*look.noise_sd), shape).astype(np.float32)
    if look.gain or look.offset_hu:
        image = image * np.float32(gain) + np.float32(offset)
    image = np.clip(image, -1024.0, 3071.0).astype(np.float32)

    if not return_regions:
        return image, label
    regions = {
        "body": np.broadcast_to(body, shape).copy(),
        "lung": lung,
        "nodule": nodule >= 0.5,
        "airway": airway_outer >= 0.5,
        "spine": spine.copy(),
    }
    return image, label, regions


def brats_phantom(
    size: int, rng: np.random.Generator, return_regions: bool = False
) -> tuple[dict[str, np.ndarray], np.ndarray] | tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """A skull-stripped brain in four MR contrasts with a glioma labelled in the BraTS 2018 convention.

    The brain is a noisy-edged ellipsoid (0 outside) with a folded cortical grey-matter ribbon, sulcal and
    interhemispheric CSF, deep grey nuclei, lateral ventricles and white matter. The tumour is a necrotic core
    (label 1) inside an enhancing rim (4) inside edema (2), each boundary an irregular surface (radius modulated by
    smooth noise). Intensities per tissue follow BraTS: enhancing bright on t1ce, necrosis dark on t1ce and bright on
    t2, edema bright on t2 and flair, CSF dark on flair. Each contrast gets its own gain, a smooth multiplicative bias
    field and Rician noise. All three tumour labels are present in every case.

    Args:
        size: voxels per side of the cube, in [32, 256].
        rng: source of randomness; the same generator state gives the same phantom.
        return_regions: also return boolean masks of the anatomy, for tests and inspection.

    Returns:
        ``(images, label)``: ``images`` maps ``"t1"``, ``"t1ce"``, ``"t2"``, ``"flair"`` (in that order) to float32
        arrays, non-negative and exactly 0 outside the brain; ``label`` is uint8 with values {0, 1, 2, 4}. All are
        ``(size, size, size)``. With ``return_regions`` a third item, a dict of boolean masks ``brain``, ``csf``,
        ``gm``, ``wm`` (normal tissue, outside the tumour).

    Raises:
        TypeError: ``size`` is not an int or ``rng`` is not a ``numpy.random.Generator``.
        ValueError: ``size`` is outside [32, 256].

    >>> images, label = brats_phantom(32, np.random.default_rng(0))
    >>> list(images), sorted(np.unique(label).tolist())
    (['t1', 't1ce', 't2', 'flair'], [0, 1, 2, 4])
    """
    size = _check_size(size)
    rng = _check_rng(rng)
    shape = (size, size, size)
    x, y, z = _grid(size)
    u = rng.uniform

    semi = np.array([u(0.33, 0.37), u(0.40, 0.44), u(0.33, 0.37)]) * size
    rho = _ellipsoid_radius(x, y, z, (0.0, 0.0, 0.0), semi) * (1.0 + 0.03 * smooth_noise(shape, size / 6, rng))
    brain = rho < 1.0

    # Normal anatomy, from the outside in; later assignments win.
    tissue = np.full(shape, _WM, dtype=np.uint8)
    gyri = smooth_noise(shape, max(2.0, size / 12), rng)
    cortex = u(0.12, 0.18)
    tissue[rho > 1.0 - cortex * (1.0 + 0.5 * gyri)] = _GM
    tissue[(rho > 1.0 - 0.8 * cortex) & (gyri > 1.0)] = _CSF
    fissure = (np.abs(x) < max(0.6, 0.012 * size)) & (z > -0.1 * semi[2])
    tissue[np.broadcast_to(fissure, shape)] = _CSF
    for side in (-1.0, 1.0):
        nucleus = (side * 0.12 * size, u(-0.02, 0.02) * size, -0.02 * size)
        tissue[_ellipsoid_radius(x, y, z, nucleus, np.array([0.06, 0.09, 0.06]) * size) < 1.0] = _GM
    vent_semi = np.array([u(0.03, 0.05), u(0.12, 0.17), u(0.05, 0.08)]) * size
    vent_x, vent_y, vent_z = u(0.045, 0.06) * size, u(-0.02, 0.04) * size, u(0.02, 0.06) * size
    for side in (-1.0, 1.0):
        tissue[_ellipsoid_radius(x, y, z, (side * vent_x, vent_y, vent_z), vent_semi) < 1.0] = _CSF

    # Tumour: nested irregular shells around a centre well inside the brain. The core and rim share one shape field
    # so the rim keeps its thickness; the edema has its own, rougher field. Minimum sizes in voxels (and the edema
    # reaching at least one voxel past the rim) keep all three labels on the grid at size 32.
    centre = _unit(rng.standard_normal(3)) * u(0.15, 0.4) * semi
    dist = np.sqrt(
        (x - np.float32(centre[0])) ** 2 + (y - np.float32(centre[1])) ** 2 + (z - np.float32(centre[2])) ** 2
    )
    r_core = max(2.0, u(0.04, 0.08) * size)
    r_enh = r_core + max(1.5, u(0.02, 0.04) * size)
    r_edema = r_enh + max(2.0, u(0.05, 0.12) * size)
    shape_core = 1.0 + 0.15 * np.clip(smooth_noise(shape, max(2.0, size / 10), rng), -1.5, 1.5)
    shape_edema = 1.0 + 0.3 * np.clip(smooth_noise(shape, max(2.0, size / 10), rng), -1.5, 1.5)
    edema = (dist < np.maximum(r_edema * shape_edema, r_enh * shape_core + 1.0)) & brain
    enhancing = (dist < r_enh * shape_core) & brain
    necrosis = (dist < r_core * shape_core) & brain
    label = np.zeros(shape, dtype=np.uint8)
    label[edema] = 2
    label[enhancing] = 4
    label[necrosis] = 1

    classes = tissue.copy()
    classes[edema] = _EDEMA
    classes[enhancing] = _ENH
    classes[necrosis] = _NEC
    classes[~brain] = _BG

    # One texture field for all contrasts: the same tissue microstructure shows in each of them.
    texture = 1.0 + _BRATS_TEXTURE[classes] * smooth_noise(shape, max(2.0, size / 16), rng)
    # Low-order polynomial coordinates for the bias field: smooth over the whole brain, like a coil profile.
    bx, by, bz = (c / np.float32(size / 2.0) for c in (x, y, z))
    terms = [bx, by, bz, bx * by, by * bz, bx * bz, bx * bx, by * by, bz * bz]
    sigma_blur = u(0.4, 0.8)
    images: dict[str, np.ndarray] = {}
    for modality in BRATS_MODALITIES:
        table = np.asarray(_BRATS_TABLE[modality], dtype=np.float32) * rng.uniform(0.92, 1.08, 7).astype(np.float32)
        gain = u(400.0, 1200.0)
        img = table[classes] * texture * np.float32(gain)
        img = ndimage.gaussian_filter(img, sigma=sigma_blur, mode="constant")
        coefs = rng.normal(0.0, 0.08, len(terms))
        img *= np.exp(sum(np.float32(c) * t for c, t in zip(coefs, terms)))
        sigma = u(0.01, 0.03) * gain
        real = img + rng.normal(0.0, sigma, shape).astype(np.float32)
        imag = rng.normal(0.0, sigma, shape).astype(np.float32)
        # Magnitude of complex Gaussian noise: Rician, non-negative, as in magnitude MR images.
        img = np.sqrt(real * real + imag * imag)
        img[~brain] = 0.0
        images[modality] = img.astype(np.float32)

    if not return_regions:
        return images, label
    normal = brain & (label == 0)
    regions = {
        "brain": brain,
        "csf": normal & (tissue == _CSF),
        "gm": normal & (tissue == _GM),
        "wm": normal & (tissue == _WM),
    }
    return images, label, regions
