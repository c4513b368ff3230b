"""NSGA-II through PyGAD. This is the only module of petra that imports pygad.

Genomes are integer indices into the search space's choices; crossover (``optimizer.crossover``)
leaves half the children a copy of one parent and mixes two parents uniformly for the others,
and mutation (``optimizer.mutation``) moves about one expressed gene per child, an ordered one to
a neighbouring choice and a categorical one to another of its choices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pygad

from petra.optimizer.crossover import crossover
from petra.optimizer.genome import SearchSpace
from petra.optimizer.mutation import mutate_all

Genome = tuple[int, ...]


def initial_population(
    space: SearchSpace, size: int, seeds: Sequence[Genome], rng: np.random.Generator
) -> np.ndarray:
    """Seeds first (deduplicated), then random genomes not yet present."""
    pop: list[Genome] = []
    for s in seeds:
        if tuple(s) not in pop and len(pop) < size:
            pop.append(tuple(int(g) for g in s))
    tries = 0
    while len(pop) < size:
        g = tuple(int(rng.integers(0, n)) for n in space.sizes)
        tries += 1
        if g not in pop or tries > 100 * size:
            pop.append(g)
    return np.array(pop, dtype=int)


def run_nsga2(
    space: SearchSpace,
    evaluate: Callable[[Genome, int], list[float]],
    *,
    generations: int,
    population: int,
    seeds: Sequence[Genome] = (),
    seed: int = 0,
    on_generation: Callable[[int, list[Genome]], bool] | None = None,
    start_generation: int = 0,
    batched: bool = False,
    repair: Callable[[list[Genome]], list[Genome]] | None = None,
    adopt: Callable[[list[Genome]], list[Genome]] | None = None,
) -> int:
    """Evolve; ``evaluate(genome, generation)`` returns the maximised objectives.

    With ``batched``, ``evaluate(genomes, generation)`` gets all of a generation's unevaluated
    genomes at once and returns one objective list per genome.
    ``on_generation(completed, population)`` is called once with the initial population
    (completed = ``start_generation``) and after every generation; returning True stops the
    search cleanly. To resume, pass the stored population as ``seeds`` and the generation it
    belongs to as ``start_generation``. ``repair(children)`` sees each generation's children
    after crossover and mutation and returns them, some changed, before they are evaluated.
    ``adopt(population)`` sees each evaluated population, the first included, before parents
    are drawn from it, and returns it with members replaced by genomes already evaluated.
    Returns the number of completed generations.
    """
    rng = np.random.default_rng(seed + start_generation)
    init = initial_population(space, population, seeds, rng)
    state = {"generation": start_generation}
    if generations <= 0 or (on_generation is not None
                            and on_generation(start_generation, [tuple(map(int, g)) for g in init])):
        return start_generation

    def fitness(ga, solution, idx):
        if batched:  # one call per generation: the evaluator can rank the batch (multi-fidelity)
            return evaluate([tuple(int(g) for g in s) for s in solution], state["generation"])
        return evaluate(tuple(int(g) for g in solution), state["generation"])

    def after_generation(ga):
        state["generation"] = start_generation + ga.generations_completed
        pop = [tuple(int(g) for g in sol) for sol in ga.population]
        if on_generation is not None and on_generation(state["generation"], pop):
            return "stop"
        return None

    def on_mutation(ga, offspring):
        if repair is None:
            return None
        return np.array(repair([tuple(int(g) for g in child) for child in offspring]), dtype=int)

    def before_parents(ga, scores):
        if adopt is not None:
            _adopt(ga, adopt, fitness)
        return ga.last_generation_fitness

    ga = _make_ga(space, init, generations, population, seed + start_generation, fitness,
                  batched=batched, on_generation=after_generation, on_mutation=on_mutation,
                  on_fitness=before_parents)
    ga.run()
    return start_generation + int(ga.generations_completed)


def _make_ga(space: SearchSpace, init: np.ndarray, generations: int, population: int, seed: int,
             fitness, *, batched: bool, on_generation, on_mutation, on_fitness) -> pygad.GA:
    """NSGA-II selection, crossover that keeps half the children whole (see ``crossover``),
    mutation near the parent (see ``mutation``)."""
    rng = np.random.default_rng(seed)
    return pygad.GA(
        num_generations=generations,
        num_parents_mating=max(2, population // 2),
        fitness_func=fitness,
        fitness_batch_size=population if batched else None,
        initial_population=init,
        gene_type=int,
        gene_space=[list(range(n)) for n in space.sizes],
        parent_selection_type="nsga2",
        keep_elitism=max(1, population // 4),
        crossover_type=lambda parents, size, ga: crossover(parents, size[0], rng),
        mutation_type=lambda offspring, ga: np.array(mutate_all(offspring, space, rng), dtype=int),
        random_seed=seed,
        suppress_warnings=True,
        on_generation=on_generation,
        on_mutation=on_mutation,
        on_fitness=on_fitness,
    )


def _adopt(ga: pygad.GA, adopt: Callable[[list[Genome]], list[Genome]], fitness) -> None:
    """Replace members of ``ga``'s population by what ``adopt`` returns, with their fitness
    (already evaluated genomes: the evaluator answers from its records)."""
    pop = [tuple(int(g) for g in sol) for sol in ga.population]
    new = adopt(pop)
    changed = [i for i, (a, b) in enumerate(zip(pop, new)) if a != b]
    if not changed:
        return
    ga.population[changed] = np.array([new[i] for i in changed], dtype=ga.population.dtype)
    scores = fitness(ga, np.array([new[i] for i in changed]), None) if ga.fitness_batch_size else \
        [fitness(ga, np.array(new[i]), i) for i in changed]
    ga.last_generation_fitness[changed] = np.array(scores, dtype=float)
