"""The Ray executor on a real local Ray cluster (head + labelled target nodes, all on this
machine, started and stopped by the tests themselves)."""

from __future__ import annotations

import json

import pytest

from petra.config import load_config
from petra.errors import ConfigError
from petra.optimizer.store import open_existing
from petra.optimizer.study import Study
from petra.progress import QuietProgress
from tests.conftest import TINY_SPACE

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.slow
TARGET = "petra-target:test-box"


@pytest.fixture(scope="module")
def cluster(tiny_teacher):  # the teacher is trained (and cached) before any Ray process starts
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    target = c.add_node(num_cpus=0, resources={TARGET: 1})
    c.wait_for_nodes()
    ray.init(address=c.address, namespace="petra-tests", log_to_driver=False)
    yield c, target
    ray.shutdown()
    c.shutdown()


def config(out, cluster, **kw):
    # generations end the run; the budget is only a ceiling. Why so high: at 150 s, with a
    # baseline training beside the suite on 2 cores, the budget ended the run after 5 trials
    c, _ = cluster
    return load_config(final_sessions=2, final_max_sessions=2, search_sessions=1,
                       generations=2, population=4, time_budget=400, output=out, max_threads=1,
                       executor="ray", ray_address=c.address, ray_target="test-box", **kw)


def test_every_measurement_runs_on_the_target_node(tiny_task, tiny_run, cluster, tmp_path):
    c, target = cluster
    results = Study(config(tmp_path, cluster), task=tiny_task, space=TINY_SPACE,
                    log=lambda s: None).run()
    assert results["status"] == "complete"
    assert results["executor"]["name"] == "ray" and results["executor"]["target_nodes"] == [target.node_id]
    measured = [t for t in results["all_trials"] if t.get("latency_ms")]
    assert len(measured) >= 6
    assert {t["node"] for t in measured} == {target.node_id}
    assert target.node_id != c.head_node.node_id
    # the re-measured front and baseline too (final figures replaced the search's)
    assert results["baseline"]["node"] == target.node_id and results["baseline"]["rounds"] >= 2
    # the same shape as a local run, and a deployable best artifact in the driver's folder
    _, local, _ = tiny_run
    assert set(results) == set(local)
    assert set(results["all_trials"][0]) == set(local["all_trials"][0])
    assert (tmp_path / results["best"]["artifact"]).is_file()


class KillNodeAfter(QuietProgress):
    """Removes a target node from the cluster once ``after`` trials have finished."""

    def __init__(self, cluster: Cluster, node, after: int) -> None:
        super().__init__()
        self.cluster, self.node, self.after, self.seen = cluster, node, after, 0
        self.killed = False

    def trial_end(self, entry: dict) -> None:
        self.seen += 1
        if self.seen == self.after and not self.killed:
            self.cluster.remove_node(self.node, allow_graceful=False)
            self.killed = True


def test_lost_target_node_the_study_finishes_on_the_other(tiny_task, cluster, tmp_path):
    c, target = cluster
    doomed = c.add_node(num_cpus=0, resources={TARGET: 1})
    c.wait_for_nodes()
    killer = KillNodeAfter(c, doomed, after=3)
    results = Study(config(tmp_path, cluster), task=tiny_task, space=TINY_SPACE,
                    progress=killer).run()
    assert killer.killed
    assert results["status"] == "complete"
    assert results["executor"]["lost_nodes"] == [doomed.node_id]
    # nothing finished was lost: the store, trials.jsonl and results.json agree
    store = open_existing(tmp_path)
    stored = store.trials()
    store.close()
    lines = (tmp_path / "trials.jsonl").read_text().splitlines()
    assert len(stored) == len(lines) == results["trials"] >= 6
    assert [json.loads(x)["trial"] for x in lines] == list(range(len(lines)))
    nodes = [t["node"] for t in results["all_trials"] if t.get("latency_ms")]
    assert set(nodes) <= {target.node_id, doomed.node_id}
    assert nodes[-1] == target.node_id  # after the loss only the surviving node measures


def test_no_target_node_is_a_one_line_config_error(tiny_task, cluster, tmp_path):
    c, _ = cluster
    cfg = load_config(output=tmp_path, executor="ray", ray_address=c.address, ray_target="nowhere")
    with pytest.raises(ConfigError, match="petra-target:nowhere.*ray start"):
        Study(cfg, task=tiny_task, space=TINY_SPACE, log=lambda s: None).run()
