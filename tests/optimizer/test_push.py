"""The push: one child a generation takes the fastest feasible model with slack one notch further."""

import numpy as np

from petra.exporters import Precision
from petra.optimizer.genome import CandidateConfig, SearchSpace
from petra.optimizer.push import PUSH_SLACK, further, push, push_last
from petra.optimizer.records import Trial, TrialState
from petra.profilers.measure import Measurement, Timing

STATIC = Precision.INT8_STATIC
SPACE = SearchSpace(precision=(Precision.FP32, STATIC), prune_ratio=(0.0, 0.3, 0.5),
                    prune_stage0=(None, 0.5, 0.6, 0.7), prune_stage1=(None, 0.0, 0.9),
                    prune_stage2=(None,), prune_stage3=(None,), drop_blocks0=(0, 1), drop_blocks1=(0,),
                    drop_blocks2=(0,), drop_blocks3=(0,), lowrank_ratio=(0.0,), epochs=(0, 4, 24),
                    threads=(1,))


def _trial(n: int, config: CandidateConfig, p50: float, drop: float, state=TrialState.COMPLETE) -> Trial:
    m = Measurement(Timing((p50,) * 3, 10), 8, Timing((4 * p50,) * 3, 10), int(p50 * 1e6), 0.01, {})
    return Trial(n, 0, config.canonical(), state, drop=drop, measurement=m)


# shaped like cdnow's book (ORT, 4ad7bc8): the GRU's second layer removed, its first pruned 50-60%
LAYER_OFF = dict(prune_ratio=0.3, drop_blocks0=1, epochs=24)
FP32 = _trial(0, CandidateConfig(), 1.0, 0.0)
PTQ = _trial(1, CandidateConfig(precision=STATIC), 0.9, 0.0)  # changes no model: never pushed
SLACK = _trial(2, CandidateConfig(prune_stage0=0.5, **LAYER_OFF), 0.30, -0.2)
FASTER = _trial(3, CandidateConfig(prune_stage0=0.6, **LAYER_OFF), 0.28, PUSH_SLACK + 0.1)  # no slack
LOST = _trial(4, CandidateConfig(prune_stage0=0.7, **LAYER_OFF), 0.20, 1.6, TrialState.INFEASIBLE)


def test_further_moves_one_component_to_the_next_choice_the_space_offers():
    config = CandidateConfig(prune_stage0=0.5, **LAYER_OFF).canonical()
    # stage 1 runs at the global 0.3: its next choice is 0.9; blocks of stage 0 are all removed
    assert sorted(further(config, SPACE)) == [("prune_stage0", 0.6), ("prune_stage1", 0.9)]
    assert ("drop_blocks0", 1) in further(CandidateConfig(prune_ratio=0.3).canonical(), SPACE)


def test_the_fastest_trial_with_slack_is_pushed_and_nothing_built_is_made_again():
    book = [FP32, PTQ, SLACK, FASTER, LOST]
    seen = {t.config.without_settings().key for t in book}
    found = push(SPACE, book, 1.0, seen, np.random.default_rng(0))
    assert found is not None
    child = SPACE.decode(found[0])
    # not FASTER (drop over the slack) and not its next step (0.6 is FASTER, built): stage 1
    assert child == SLACK.config.replace(prune_stage1=0.9).canonical()
    assert "trial 2" in found[1] and "prune_stage1 = 0.9" in found[1]
    seen.add(child.without_settings().key)
    assert push(SPACE, book, 1.0, seen, np.random.default_rng(0)) is None
    # a wider constraint gives FASTER the slack: it is pushed first (stage 0's next step, 0.7,
    # is built: stage 1)
    wide = push(SPACE, book, 3.0, {t.config.without_settings().key for t in book},
                np.random.default_rng(0))
    assert "trial 3" in wide[1]
    assert SPACE.decode(wide[0]) == FASTER.config.replace(prune_stage1=0.9).canonical()


def test_the_last_child_is_replaced_and_the_log_says_by_what():
    children = [SPACE.encode(FP32.config), SPACE.encode(PTQ.config)]
    lines: list[str] = []
    out = push_last(children, SPACE, [FP32, PTQ, SLACK], 1.0, 0, lines.append)
    pushes = {SLACK.config.replace(prune_stage0=0.6).canonical(),
              SLACK.config.replace(prune_stage1=0.9).canonical()}
    assert out[0] == children[0] and SPACE.decode(out[1]) in pushes
    assert len(lines) == 1 and lines[0].startswith("push: trial 2")
    assert push_last(children, SPACE, [FP32, PTQ], 1.0, 0, lines.append) == children  # no slack
    assert push_last([], SPACE, [SLACK], 1.0, 0, lines.append) == []
