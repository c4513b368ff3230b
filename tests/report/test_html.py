"""The HTML report is parsed, not eyeballed: plots, tables, no external URL."""

from html.parser import HTMLParser

from petra.report import render, write_report
from tests.test_cli import _one_line_error, petra


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: dict[str, int] = {}
        self.urls: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for k, v in attrs:
            if k in ("src", "href", "xlink:href") and v:
                self.urls.append(v)

    def handle_data(self, data):
        self.text.append(data)


def test_report_has_plots_tables_and_no_urls(tiny_run):
    out, results, _ = tiny_run
    html = render(results)
    p = Collect()
    p.feed(html)
    assert p.tags.get("svg", 0) >= 3  # metric vs latency, metric vs size, progress
    assert p.tags.get("table", 0) >= 3  # front, generations, all trials
    assert p.tags.get("polygon", 0) >= 2  # the baseline star in both Pareto plots
    assert p.urls == [] and "http" not in html and "<script" not in html
    text = " ".join(p.text)
    assert "Pareto front" in text and "All trials" in text and "Machine and libraries" in text
    assert results["machine"]["cpu"] in text
    for trial in results["all_trials"]:  # every trial, with its state
        assert trial["state"] in text
    path = write_report(out, results)
    assert path.read_text() == html


def test_report_and_show_cli(tiny_run, tmp_path):
    out, results, _ = tiny_run
    target = tmp_path / "r.html"
    proc = petra("report", str(out), "--out", str(target))
    assert proc.returncode == 0 and target.stat().st_size > 2000
    show = petra("show", str(out))
    assert show.returncode == 0 and "baseline" in show.stdout and "generation" in show.stdout


def test_report_of_a_folder_without_results(tmp_path):
    _one_line_error(petra("report", str(tmp_path)), "no results.json")


def test_report_lists_removed_genes_and_one_summary_per_config(tiny_run):
    from petra.candidate import describe

    _, results, _ = tiny_run
    shown = dict(results, removed_genes=[{"gene": "qat", "reason": "quantization-aware training failed"}])
    p = Collect()
    p.feed(render(shown))
    text = " ".join(p.text)
    assert "Genes removed" in text and "quantization-aware training failed" in text
    for trial in results["all_trials"]:  # the report's config column is the one summary
        assert describe(trial["config"]) in text
