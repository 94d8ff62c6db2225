"""The evolutionary half of EA-Adam, free of BasicSR: decomposition, variation, gradient mixing, MOEA/D, Pareto
tools, an external archive. Genomes are state dicts of tensors; objectives are minimised and evaluated by the caller."""
from basicsr_ea.evolution.archive import Archive
from basicsr_ea.evolution.decomposition import das_dennis, neighbors, tchebycheff, uniform_ref_dirs
from basicsr_ea.evolution.gradients import mix_normalized_gradients
from basicsr_ea.evolution.moead import Generation, distinct_count, ideal_nadir, moead_generation
from basicsr_ea.evolution.operators import cross_sbx, mutate_gaussian, sbx_spread_factor
from basicsr_ea.evolution.pareto import hypervolume_2d, non_dominated_sort

__all__ = [
    'Archive', 'distinct_count', 'das_dennis', 'neighbors', 'tchebycheff', 'uniform_ref_dirs',
    'mix_normalized_gradients', 'Generation', 'ideal_nadir', 'moead_generation', 'cross_sbx', 'mutate_gaussian',
    'sbx_spread_factor', 'hypervolume_2d', 'non_dominated_sort'
]
