"""The scikit-image segmentation methods on a map of cell probability: a label image, one integer per segment
and 0 on the one-pixel boundaries between segments.

* `watershed`: seeds where the (optionally smoothed) cell probability exceeds `seed_threshold`, seeds
  under `min_seed_size` pixels dropped, then a watershed of the membrane probability from them. A gap
  closes when the cells on either side have seeds of their own.
* `agglomerate`: those watershed regions as superpixels, merged over their region adjacency graph while
  the mean membrane probability along a shared boundary stays under `merge_threshold` (scikit-image's
  hierarchical merging of a boundary RAG). It removes the false splits a low seed threshold leaves.
"""

from __future__ import annotations

import numpy as np


def seeds(prob: np.ndarray, seed_threshold: float, min_seed_size: int, sigma: float) -> np.ndarray:
    """Returns the seed labels: 4-connected regions of the smoothed map above `seed_threshold`, each of at
    least `min_seed_size` pixels."""
    from skimage import measure, morphology

    seeded = measure.label(smoothed(prob, sigma) > seed_threshold, connectivity=1)
    if min_seed_size > 1:
        seeded = morphology.remove_small_objects(seeded, max_size=int(min_seed_size) - 1)
    return seeded


def smoothed(prob: np.ndarray, sigma: float) -> np.ndarray:
    from skimage import filters

    prob = np.asarray(prob, np.float32)
    return filters.gaussian(prob, sigma=sigma, preserve_range=True) if sigma > 0 else prob


def watershed_regions(prob: np.ndarray, seed_threshold: float, min_seed_size: int, sigma: float = 0.0) -> np.ndarray:
    """Returns regions that tile the image (labels 1..n, no boundary pixels), flooded over the membrane
    probability from the seeds; without any seed, the whole image is one region."""
    from skimage import segmentation

    markers = seeds(prob, seed_threshold, min_seed_size, sigma)
    if markers.max() == 0:
        return np.ones(prob.shape, np.int32)
    return segmentation.watershed(1.0 - smoothed(prob, sigma), markers=markers, connectivity=1).astype(np.int32)


def with_boundaries(regions: np.ndarray) -> np.ndarray:
    """Returns the regions relabelled 1..n with 0 on a one-pixel boundary wherever two regions touch: of each
    4-adjacent pair of different labels, the left or upper pixel becomes boundary, so no two segments
    stay 4-connected (the challenge's connectivity). Label 0 is boundary already: a region beside it keeps
    its pixels."""
    from skimage.segmentation import relabel_sequential

    regions = np.asarray(regions)
    lines = np.zeros(regions.shape, bool)
    left, right, up, down = regions[:, :-1], regions[:, 1:], regions[:-1, :], regions[1:, :]
    lines[:, :-1] |= (left != right) & (right != 0)
    lines[:-1, :] |= (up != down) & (down != 0)
    labels = np.where(lines, 0, regions)
    return relabel_sequential(labels)[0].astype(np.int32)


def watershed(prob: np.ndarray, seed_threshold: float, min_seed_size: int, sigma: float = 0.0) -> np.ndarray:
    """Returns the label image of a seeded watershed (see the module docstring)."""
    return with_boundaries(watershed_regions(prob, seed_threshold, min_seed_size, sigma))


def agglomerate(prob: np.ndarray, seed_threshold: float, min_seed_size: int, merge_threshold: float,
                sigma: float = 0.0) -> np.ndarray:
    """Returns the label image of watershed superpixels merged by mean boundary membrane probability."""
    return with_boundaries(merged_regions(watershed_regions(prob, seed_threshold, min_seed_size, sigma),
                                          1.0 - np.asarray(prob, np.float32), merge_threshold))


def merged_regions(regions: np.ndarray, membrane: np.ndarray, merge_threshold: float) -> np.ndarray:
    """Returns `regions` after merging, weakest boundary first, every pair whose mean `membrane` along the
    shared boundary is below `merge_threshold` (skimage.graph.merge_hierarchical on rag_boundary)."""
    from skimage import graph

    if regions.max() < 2:
        return regions
    rag = graph.rag_boundary(regions, membrane.astype(np.float64), connectivity=1)
    merged = graph.merge_hierarchical(regions, rag, thresh=merge_threshold, rag_copy=False, in_place_merge=True,
                                      merge_func=_keep_edges, weight_func=_boundary_weight)
    return merged.astype(np.int32) + 1  # merge_hierarchical numbers regions from 0


def _keep_edges(graph, src, dst):
    """merge_hierarchical's merge hook: nothing to update on the nodes (the weights are the edges')."""


def _boundary_weight(graph, src, dst, neighbor) -> dict[str, float]:
    """The merged node's edge to `neighbor`: the pixel-count-weighted mean of both old edges' boundary means
    (scikit-image's boundary-RAG merging recipe)."""
    empty = {"weight": 0.0, "count": 0}
    a, b = graph[src].get(neighbor, empty), graph[dst].get(neighbor, empty)
    count = a["count"] + b["count"]
    return {"count": count, "weight": (a["count"] * a["weight"] + b["count"] * b["weight"]) / max(count, 1)}
