"""Graph partitioning from python-elf on bioimage-cpp (Wolf et al. 2020; Beier et al. 2017; Bailoni et al. 2022),
each returning a label image with 0 on one-pixel boundaries, as the scikit-image methods do:

* `mutex_watershed`: affinities only. Short-range affinities attract, long-range ones repel; the Mutex Watershed
  clusters the pixel grid greedily, strongest edge first, never merging across a mutex. `bias` shifts the
  repulsive weights (0.5: as predicted; higher: more splits); pixels whose derived cell probability is under
  `threshold` (the membranes, which belong to no object) stay boundary.
* `multicut` and `gasp`: on distance-transform watershed superpixels of the membrane probability (`threshold`,
  `sigma_seeds`, `min_size`), each superpixel edge weighted by the mean membrane probability along it; multicut
  (Kernighan-Lin after greedy additive contraction) cuts edges by log-odds costs with boundary bias `beta`, GASP
  (average linkage) merges while the signed weight (1 - beta) - probability stays positive. On an affinity model
  the membrane probability is the one its short-range affinities imply.
"""

from __future__ import annotations

import numpy as np

from segexp.data.affinities import Target, cell_map
from segexp.postprocessing.watershed import with_boundaries

DIRECT = ((-1, 0), (0, -1))  # elf's Mutex Watershed takes these two first, as the attractive channels


def mutex_watershed(affinities: np.ndarray, target: Target, bias: float, threshold: float) -> np.ndarray:
    """Returns the label image of the Mutex Watershed of same-object probabilities (H, W, C) at target.offsets."""
    from elf.segmentation.mutex_watershed import mutex_watershed as elf_mws

    order = [target.offsets.index(o) for o in DIRECT] + \
        [i for i, o in enumerate(target.offsets) if o not in DIRECT]
    boundaries = 1.0 - np.moveaxis(np.asarray(affinities, np.float32)[..., order], -1, 0)  # elf: 1 = cut
    boundaries[len(DIRECT):] += bias - 0.5
    foreground = cell_map(affinities, target) >= threshold
    segments = elf_mws(np.ascontiguousarray(boundaries), [list(target.offsets[i]) for i in order], strides=[1, 1],
                       mask=foreground)
    return with_boundaries(np.where(foreground, segments, 0).astype(np.int64))


def superpixel_graph(membrane: np.ndarray, threshold: float, sigma_seeds: float, min_size: int):
    """Returns (superpixels, their region adjacency graph, mean membrane probability and length of each edge)."""
    from elf.segmentation.features import compute_boundary_mean_and_length, compute_rag
    from elf.segmentation.watershed import distance_transform_watershed

    superpixels, _ = distance_transform_watershed(membrane, threshold, sigma_seeds, min_size=int(min_size))
    superpixels = superpixels.astype(np.uint32)
    rag = compute_rag(superpixels, n_threads=1)
    features = compute_boundary_mean_and_length(rag, superpixels, membrane, n_threads=1)
    return superpixels, rag, features[:, 0], features[:, 1]


def merged_superpixels(prob: np.ndarray, solve, threshold: float, sigma_seeds: float, min_size: int) -> np.ndarray:
    """Returns the label image of superpixels of 1 - prob merged by `solve(rag, edge means, edge lengths)` -> node
    labels."""
    from elf.segmentation.features import project_node_labels_to_pixels

    membrane = 1.0 - np.asarray(prob, np.float32)
    superpixels, rag, means, lengths = superpixel_graph(membrane, threshold, sigma_seeds, min_size)
    if rag.number_of_edges == 0:
        return with_boundaries(np.where(membrane < 0.5, superpixels.astype(np.int64), 0))
    nodes = solve(rag, means, lengths)
    segments = project_node_labels_to_pixels(rag, superpixels, nodes, n_threads=1).astype(np.int64)
    # the membranes stay boundary, as in the Mutex Watershed's output: a superpixel reaches into them only to tile
    return with_boundaries(np.where(membrane < 0.5, segments, 0))


def multicut(prob: np.ndarray, beta: float, threshold: float, sigma_seeds: float, min_size: int) -> np.ndarray:
    """Returns the label image of the multicut of superpixels of a cell-probability map."""
    from elf.segmentation.multicut import compute_edge_costs, multicut_kernighan_lin

    def solve(rag, means, lengths):
        return multicut_kernighan_lin(rag, compute_edge_costs(means, lengths, beta=beta, weighting_scheme="all"))
    return merged_superpixels(prob, solve, threshold, sigma_seeds, min_size)


def gasp(prob: np.ndarray, beta: float, threshold: float, sigma_seeds: float, min_size: int) -> np.ndarray:
    """Returns the label image of GASP (average linkage) over superpixels of a cell-probability map."""
    from elf.segmentation.gasp import run_GASP

    def solve(rag, means, lengths):
        nodes, _ = run_GASP(rag, (1.0 - beta) - means, linkage_criteria="average", edge_sizes=lengths)
        return nodes
    return merged_superpixels(prob, solve, threshold, sigma_seeds, min_size)
