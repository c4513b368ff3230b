from petra.optimizer.genome import SearchSpace
from petra.optimizer.nsga import initial_population, run_nsga2


def test_initial_population_starts_with_seeds(rng):
    space = SearchSpace()
    n = len(space.sizes)
    seeds = [tuple([0] * n), tuple(min(1, s - 1) for s in space.sizes), tuple([0] * n)]
    pop = initial_population(space, 6, seeds, rng)
    assert pop.shape == (6, n)
    assert tuple(pop[0]) == seeds[0] and tuple(pop[1]) == seeds[1]
    assert len({tuple(p) for p in pop}) == 6


def test_nsga2_improves_a_known_biobjective_problem():
    """Objectives pull two genes in opposite directions; the front must spread and improve."""
    space = SearchSpace()
    seen = []

    a, b = 0, space.gene_names.index("precision")

    def evaluate(genome, generation):
        seen.append(genome)
        return [float(genome[a]), float(-genome[a] + genome[b])]

    done = run_nsga2(space, evaluate, generations=8, population=8, seed=1)
    assert done == 8
    first = seen[:8]
    assert max(g[b] for g in seen) >= max(g[b] for g in first)
    assert max(g[a] for g in seen) >= space.sizes[a] - 2  # pushed to the extreme of gene a
    assert max(g[a] for g in seen) > sorted(g[a] for g in first)[len(first) // 2]


def test_nsga2_stops_when_asked():
    space = SearchSpace()
    done = run_nsga2(space, lambda g, gen: [0.0, 0.0], generations=10, population=4,
                     on_generation=lambda n, pop: n >= 2)
    assert done == 2
