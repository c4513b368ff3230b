"""The sensitivity-seeded start and the stagnation stop."""

from __future__ import annotations

from types import SimpleNamespace

from petra.candidate import CandidateConfig, SearchSpace
from petra.compression.depth import depth_stages
from petra.exporters.quantize import Precision
from petra.optimizer.records import Trial, TrialState
from petra.optimizer.search import GenerationLoop, build_cost, expected_build_s
from petra.optimizer.sensitivity import (
    MILD_MEAN,
    Sensitivity,
    open_depth,
    open_stages,
    sensitivity_seeds,
    skips_cheap_pass,
    stage_sensitivity,
)
from petra.optimizer.space import handmade_config
from petra.optimizer.stagnation import IMPROVEMENT, Stagnation


def test_the_least_sensitive_stage_is_pruned_hardest():
    s = Sensitivity((5.0, 0.1, 30.0, 1.0))
    r = s.ratios(0.5)
    assert r[2] == min(r) and r[1] == max(r)
    assert abs(sum(r) / 4 - 0.5) < 0.06
    assert all(0.0 <= x <= 0.9 for x in s.ratios(0.8))


def test_seeds_are_non_uniform_snapped_to_the_space_and_canonical():
    space = SearchSpace()
    seeds = sensitivity_seeds(handmade_config(1), Sensitivity((0.0, 9.0, 2.0, 4.0)), space)
    assert len(seeds) == 2
    for seed in seeds:
        assert seed == seed.canonical()
        stages = [getattr(seed, f"prune_stage{i}") for i in range(4)]
        assert any(s is not None for s in stages)
        space.encode(seed)  # every value is one of the space's choices
    assert open_stages(space) == 4
    assert open_stages(space.replace(prune_stage2=(None,), prune_stage3=(None,))) == 2


def test_a_seed_removes_a_block_where_it_cost_least():
    space = SearchSpace()
    template = handmade_config(1)
    sens = Sensitivity((0.0, 9.0, 2.0, 4.0), depth_drops=(None, 3.0, 0.5, None))
    assert sens.least_sensitive_depth() == 2
    moderate, shortened, aggressive = sensitivity_seeds(template, sens, space)
    assert shortened.drop_blocks1 == 0
    assert shortened.drop_blocks2 == 1 and aggressive.drop_blocks2 == 0 == moderate.drop_blocks2
    assert shortened.prune_ratio < moderate.prune_ratio  # the block is most of its compression
    assert skips_cheap_pass(shortened) and not skips_cheap_pass(moderate)
    assert Sensitivity((1.0, 2.0), depth_drops=(None, None)).least_sensitive_depth() is None
    # two open depth stages: no deep seed, so the one that removes a block trains longest
    assert shortened.epochs == max(space.epochs) > template.epochs == moderate.epochs


def test_the_mild_seed_comes_last_and_skips_the_cheap_pass():
    space = SearchSpace()
    sens = Sensitivity((0.0, 9.0, 2.0, 4.0), depth_drops=(None, 3.0, 0.5, None))
    hedged = sensitivity_seeds(handmade_config(1), sens, space)
    seeds = sensitivity_seeds(handmade_config(1), sens, space, mild=True)
    assert seeds[:-1] == hedged and len(seeds) == 4
    mild = seeds[-1]
    assert mild.prune_ratio == MILD_MEAN and mild.drop_blocks2 == 0
    stages = [getattr(mild, f"prune_stage{i}") for i in range(4)]
    assert len(set(stages)) > 1 and stages.index(max(stages)) == 0  # stage 0 minded least
    assert skips_cheap_pass(mild) and not any(skips_cheap_pass(s) for s in seeds[::2])
    assert not skips_cheap_pass(CandidateConfig())  # unpruned: nothing to train


def test_fp32_twins_hedge_only_a_close_ptq_choice():
    """A PTQ precision that measured well under FP32 needs no FP32 twin; the mild seed takes
    the room in the population of 8 instead."""
    loop = SimpleNamespace(_sensitivity=Sensitivity((0.0, 9.0, 2.0, 4.0)), space=SearchSpace())
    loop._depth_savings = lambda *a: GenerationLoop._depth_savings(loop, *a)  # no depth: nothing run
    ptq = CandidateConfig(precision=Precision.INT8_STATIC)
    close = GenerationLoop._sensitivity_seeds(loop, 1, "onnxruntime", ptq, close=True, ptq_p50=1.0)
    clear = GenerationLoop._sensitivity_seeds(loop, 1, "onnxruntime", ptq, close=False, ptq_p50=1.0)
    assert [c.precision for c in close] == [Precision.INT8_STATIC, Precision.FP32] * 2
    assert [c.prune_ratio for c in close[::2]] == [0.5, 0.7]
    assert all(c.precision is Precision.INT8_STATIC for c in clear)
    assert [c.prune_ratio for c in clear] == [0.5, 0.7, MILD_MEAN]


def test_stage_sensitivity_scores_each_stage_alone_on_real_data(tiny_task, tiny_teacher):
    blocks = depth_stages(tiny_teacher, tiny_task.example_input)
    assert blocks, "the tiny residual CNN has removable blocks"
    depth = tuple(i < len(blocks) for i in range(4))
    sens = stage_sensitivity(tiny_task, tiny_teacher, 3, depth=depth)
    assert len(sens.drops) == 3 and all(-100 < d <= 100 for d in sens.drops)
    assert max(sens.drops) > 0  # halving a stage with no training costs something somewhere
    assert [d is not None for d in sens.depth_drops] == list(depth)
    assert all(-100 < d <= 100 for d in sens.depth_drops if d is not None)
    assert max(d for d in sens.depth_drops if d is not None) > 0  # a block did something
    assert open_depth(SearchSpace()) == (True,) * 4


def test_stagnation_counts_generations_without_a_better_front():
    s = Stagnation(2)
    assert not any(s.update(0.0) for _ in range(5))  # nothing feasible yet: nothing to stop on
    assert not s.update(0.30) and s.since == 0
    assert not s.update(0.30 * (1 + IMPROVEMENT / 2))  # within noise: not an improvement
    assert s.update(0.29)  # the second generation without one stops the run
    resumed = Stagnation(2, s.state())
    assert resumed.since == 2 and resumed.best == 0.30
    assert not resumed.update(0.5) and resumed.since == 0


def test_a_config_carries_the_stage_genes_through_json():
    c = CandidateConfig(prune_ratio=0.5, prune_stage0=0.2, drop_blocks1=1)
    assert CandidateConfig.from_json(c.to_json()) == c


def test_a_batch_builds_its_cheapest_candidates_first():
    handmade = handmade_config(1)
    shortened = handmade.replace(prune_ratio=0.3, prune_stage0=0.6, prune_stage1=0.0, drop_blocks1=1)
    harder = handmade.replace(prune_ratio=0.7)
    untrained = CandidateConfig(prune_ratio=0.5)
    batch = [handmade, harder, shortened, untrained]
    assert sorted(batch, key=build_cost) == [untrained, shortened, harder, handmade]


def test_the_deep_seed_removes_a_block_from_every_stage_but_the_most_sensitive():
    space, template = SearchSpace(), handmade_config(1)
    sens = Sensitivity((0.0, 9.0, 2.0, 4.0), depth_drops=(0.2, 3.0, 0.5, 1.0))
    moderate, shortened, middle, deep, aggressive = sensitivity_seeds(template, sens, space)
    blocks = [[getattr(c, f"drop_blocks{i}") for i in range(4)] for c in (shortened, middle, deep)]
    # stage 1 minded a removal most: it keeps its block; the middle seed drops the cheapest two
    assert blocks == [[1, 0, 0, 0], [1, 0, 1, 0], [1, 0, 1, 1]]
    assert deep.epochs == middle.epochs == max(space.epochs) == 24 and shortened.epochs == template.epochs
    assert deep.prune_ratio == middle.prune_ratio == shortened.prune_ratio
    assert skips_cheap_pass(deep) and skips_cheap_pass(middle)
    # three open stages: half of them is one block, the shortened seed's shape: no middle seed
    three = Sensitivity(sens.drops, depth_drops=(0.2, 3.0, 0.5, None))
    assert [sum(getattr(c, f"drop_blocks{i}") for i in range(4))
            for c in sensitivity_seeds(template, three, space)] == [0, 1, 2, 0]
    # two open stages: all but one is the block-removing seed itself; no fine-tune: no deep seed
    two = Sensitivity(sens.drops, depth_drops=(None, 3.0, 0.5, None))
    assert len(sensitivity_seeds(template, two, space)) == 3
    assert len(sensitivity_seeds(template, sens, space.replace(epochs=(0,)))) == 3


def test_block_removal_is_ranked_by_drop_per_time_saved_once_measured():
    """fashion-mnist's shape: the high-resolution stage minds a removal most, but holds most of
    the time; per fraction of p50 saved it is cheaper than the deepest stage."""
    space, template = SearchSpace(), handmade_config(1)
    drops = (3.0, 0.5, 0.6, 0.4)
    assert Sensitivity(drops, depth_drops=drops).depths_by_cost()[:-1] == [3, 1, 2]
    timed = Sensitivity(drops, depth_drops=drops, depth_saved=(0.45, 0.10, 0.08, 0.02))
    assert timed.depths_by_cost() == [1, 0, 2, 3]  # 5, 6.7, 7.5 and 20 points per p50 saved
    deep = sensitivity_seeds(template, timed, space)[3]
    assert [getattr(deep, f"drop_blocks{i}") for i in range(4)] == [1, 1, 1, 0]
    # a removal that saved nothing is the costliest, whatever it lost; a free one the cheapest
    assert Sensitivity(drops, depth_drops=(0.0, 0.5, 0.6, 0.0),
                       depth_saved=(0.3, 0.1, 0.1, -0.01)).depths_by_cost() == [0, 1, 2, 3]
    # one open stage not measured (out of time, or its build failed): the drops alone rank
    partial = Sensitivity(drops, depth_drops=drops, depth_saved=(0.45, None, 0.08, 0.02))
    assert partial.depths_by_cost() == [3, 1, 2, 0]


def test_the_time_each_block_saves_is_measured_on_the_runtime(tiny_run):
    """In a real run each open depth stage loses one block alone, unpruned and untrained, as a
    recorded trial; what its p50 saved is logged and ranks the stages for the deep seed."""
    _, results, logs = tiny_run
    line = next(m for m in logs if "p50 saved by removing one block" in m)
    probes = [t for t in results["all_trials"] if t["config"]["epochs"] == 0
              and t["config"]["prune_ratio"] == 0.0
              and sum(t["config"].get(f"drop_blocks{i}", 0) for i in range(4)) == 1]
    assert len(probes) >= line.count("%") >= 2


def _built(epochs: int, finetune_s: float, elapsed_s: float, state=TrialState.COMPLETE) -> Trial:
    cfg = CandidateConfig(prune_ratio=0.5, epochs=epochs)
    return Trial(0, 0, cfg, state, stage_s={"finetune_s": finetune_s}, elapsed_s=elapsed_s)


def test_a_build_is_expected_to_last_its_epochs_at_the_runs_pace():
    # fashion-mnist's pace: 4 epochs in 15 s of a 17 s build; a 24-epoch build then took 75-100 s,
    # which the median build (17 s) could not foresee
    trials = [_built(4, 15.0, 17.0), _built(2, 8.0, 10.0), _built(4, 16.0, 18.0),
              _built(1, 1.0, 99.0, TrialState.STOPPED_EARLY)]
    # medians: 4 s an epoch, 2 s besides
    assert expected_build_s(trials, CandidateConfig(prune_ratio=0.5, epochs=24)) == 24 * 4.0 + 2.0
    assert expected_build_s(trials, CandidateConfig(prune_ratio=0.5)) == 0.0  # nothing to train: no wait
    assert expected_build_s([], trials[0].config) == 0.0
