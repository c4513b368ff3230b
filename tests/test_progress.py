import io
import json

from petra.progress import Fanout, JsonProgress, PlainProgress, generation_line


def test_json_progress_emits_one_object_per_line():
    stream = io.StringIO()
    p = JsonProgress(stream)
    p.run_start({"task": "t", "generations": 2})
    p.trial_start(0, 0, {"prune_ratio": 0.5})
    p.stage("finetune")
    p.generation_end({"generation": 1, "generations": 2, "trials": 3, "front_size": 1,
                      "elapsed_s": 1.0, "best": None})
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["run_start", "trial_start", "stage", "generation_end"]
    assert events[2]["stage"] == "finetune"


def test_fanout_and_plain_lines():
    a, b = [], []
    f = Fanout(PlainProgress(a.append), PlainProgress(b.append))
    f.message("hello")
    summary = {"generation": 1, "generations": 2, "trials": 3, "front_size": 1, "elapsed_s": 1.0,
               "best": {"trial": 2, "metric": 99.0, "p50_ratio": 0.2, "size_ratio": 0.1}}
    f.generation_end(summary)
    assert a == b == ["hello", generation_line(summary)]
    assert "0.200x" in a[1]


def test_json_mode_end_to_end(tiny_run):
    """The study's own events in order: the run starts, trials start and end, generations end."""
    out, results, logs = tiny_run
    assert any(line.startswith("generation 1/2") for line in logs)
    assert results["generations"][0]["generation"] == 1
