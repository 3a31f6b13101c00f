"""prismrec report: one self-contained HTML file for runs, compare, tune and transfer folders, feature quality.

The runs are trained once per module on the small synthetic MMRec folder (60 users x 60 items, two
epochs). The browser tests open the reports in headless Chromium (tests/browser.py) and are skipped, with
their reason, where Chromium is not installed.
"""

from __future__ import annotations

import base64
import io
import json
import re

import pytest

import prismrec.api as api
from prismrec.errors import PrismrecError
from prismrec.report import html as report_html
from prismrec.report.paired import paired_over_seeds
from prismrec.report.tables import signed
from prismrec.runs import load_per_user

from browser import NO_CHROMIUM, chromium, load_page
from conftest import CliProcess, write_mmrec

SMALL = {"embedding_size": 8, "train": {"batch_size": 64, "learning_rate": 0.01, "topk": [5, 10, 20],
                                        "valid_metric": "recall@10", "threads": 1}}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A compare folder (bpr and lightgcn, seeds 0 and 1, with a feature-quality JSON), a sequential run."""
    root = tmp_path_factory.mktemp("report")
    folder, _ = write_mmrec(root / "data", "toy", features=8)
    cmp = root / "cmp"
    res = api.compare(["bpr", "lightgcn"], str(folder), cmp, seeds=[0, 1], epochs=2,
                      overrides={**SMALL, "lightgcn": {"n_layers": 1}})
    api.feature_quality(str(folder), out=cmp / "features.json")
    seq = root / "seq"
    api.train("sasrec", str(folder), seq, epochs=2, overrides={**SMALL, "sasrec": {"max_len": 8}})
    return {"root": root, "data": folder, "cmp": cmp, "compare": res, "seq": seq}


def images(text: str) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]*)"', text)


def assert_self_contained(text: str) -> None:
    """Nothing is fetched when the page is viewed: no script, no external style sheet or font, and every
    src/href is a data: URI or an anchor on the page."""
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text.lower()
    assert "@import" not in text
    for url in re.findall(r"url\(([^)]*)\)", text):
        assert url.strip("'\" ").startswith("data:"), url
    for attr, value in re.findall(r'\b(src|href)\s*=\s*"([^"]*)"', text):
        assert value.startswith(("data:", "#")), (attr, value[:80])
    for src in images(text):
        assert src.startswith("data:image/png;base64,"), src[:60]
        from PIL import Image

        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert img.format == "PNG" and img.size[0] > 100 and img.size[1] > 100


def headings(text: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<h[23][^>]*>(.*?)</h[23]>", text)]


def test_compare_writes_the_report_of_its_folder(made):
    cmp = made["cmp"]
    assert made["compare"].report == cmp / "report.html"
    text = (cmp / "report.html").read_text()
    assert_self_contained(text)
    hs = headings(text)
    for want in ("Comparison cmp", "Test metrics over seeds", "Validation curves", "Paired tests", "Results by segment",
                 "Runs"):
        assert want in hs, (want, hs)
    assert not any(h.startswith("Attribution example") for h in hs)  # no sequential model in this comparison
    # the results table is the one compare printed, the bars, curves and segments are plots
    assert "`bpr`" not in text and "<code>bpr</code>" in text
    assert len(images(text)) == 4  # metric bars, validation curves, user activity, item popularity
    assert "<th>popular items</th>" in text and "<th>long-tail items</th>" in text  # item popularity table


def test_report_of_a_compare_folder_with_feature_quality(made):
    out = api.report(made["cmp"], made["root"] / "again.html")
    text = out.read_text()
    assert_self_contained(text)
    hs = headings(text)
    assert "Feature quality features.json" in hs
    assert "zero-shot" in text and "item-knn" in text
    assert len(images(text)) == 5  # + the feature-quality bars
    # every run of the folder is listed
    for entry in ("bpr", "lightgcn"):
        for seed in (0, 1):
            assert f"<code>{entry}/seed-{seed}</code>" in text


def test_paired_matrix_follows_the_one_rule(made):
    """Cell (lightgcn, bpr) is lightgcn - bpr over users after averaging each user's seeds, both ways round."""
    cmp = made["cmp"]
    text = (cmp / "report.html").read_text()
    a = [load_per_user(cmp / "bpr" / f"seed-{s}") for s in (0, 1)]
    b = [load_per_user(cmp / "lightgcn" / f"seed-{s}") for s in (0, 1)]
    for metric in ("ndcg@20", "recall@20"):
        t = paired_over_seeds(a, b, metric)
        table = text[text.index(f"<caption>Test {metric}: row minus column"):]
        table = table[:table.index("</table>")]
        rows = {re.sub(r"<[^>]+>", "", r.split("</th>")[0]): r for r in table.split("<tr><th>")[1:]}
        assert f">{signed(t.diff)}<br><small>p " in rows["lightgcn"]
        assert f">{signed(-t.diff)}<br><small>p " in rows["bpr"]


def test_a_moved_compare_folder_reads_its_own_runs(made, tmp_path):
    """runs.csv records the run paths at compare time; a copy (an archive, another machine) reads the runs
    under itself, not the originals, even while those still exist."""
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(made["cmp"], moved)
    entries, _ = report_html._compare_runs(moved)
    runs = [run for rs in entries.values() for run in rs]
    assert len(runs) == 4 and all(run.path.is_relative_to(moved) for run in runs)
    assert report_html.run_dir_candidates(moved, str(made["cmp"] / "bpr" / "seed-1"))[0] == moved / "bpr" / "seed-1"


def test_report_of_a_single_run(made):
    run = made["cmp"] / "lightgcn" / "seed-0"
    out = api.report(run)
    assert out == run / "report.html"
    text = out.read_text()
    assert_self_contained(text)
    hs = headings(text)
    assert hs[0].startswith("Run seed-0: lightgcn on toy")
    for want in ("Validation curves", "Results by segment"):
        assert want in hs
    assert "Paired tests" not in hs
    assert "Test metrics (weights of the best validation epoch)" in text
    m = json.loads((run / "metrics.json").read_text())
    assert f"{m['test']['recall@10']:.4f}" in text
    assert len(images(text)) == 3


def test_sequential_run_has_an_attribution_example(made):
    text = api.report(made["seq"], made["root"] / "seq.html").read_text()
    assert_self_contained(text)
    hs = headings(text)
    assert "Attribution example: sasrec" in hs
    assert "most helpful history items" in text
    assert 'alt="attribution of recommendations to history items and modalities"' in text
    assert len(images(text)) == 4  # curves, two segment plots, attribution


def test_a_failing_attribution_only_leaves_its_section_out(made, monkeypatch, prismrec_log):
    def broken(run, k=5):
        raise RuntimeError("no gradient today")

    monkeypatch.setattr(report_html, "_explain", broken)
    text = api.report(made["seq"], made["root"] / "seq-broken.html").read_text()
    assert not any(h.startswith("Attribution example") for h in headings(text))
    assert "Validation curves" in headings(text)
    assert any("attribution example" in r.getMessage() and "no gradient today" in r.getMessage()
               for r in prismrec_log.records)


def test_several_folders_and_files_in_one_report(made, monkeypatch):
    monkeypatch.chdir(made["root"])
    out = api.report([made["cmp"] / "bpr" / "seed-1", made["cmp"] / "features.json"], explain=False)
    assert out.name == "report.html" and out.parent.resolve() == made["root"].resolve()
    hs = headings(out.read_text())
    assert hs[0].startswith("Run seed-1: bpr") and "Feature quality features.json" in hs


def test_tune_and_transfer_folders(made, tmp_path):
    tune = tmp_path / "tune"
    api.tune("bpr", str(made["data"]), tune, {"embedding_size": [4, 8]}, seeds=[0], final_seeds=[0, 1], epochs=1,
             overrides=SMALL)
    text = api.report(tune).read_text()
    assert_self_contained(text)
    hs = headings(text)
    for want in ("Tuning tune", "Trials (every grid setting)", "Final runs of the chosen setting"):
        assert want in hs, hs
    assert "(chosen)" in text
    assert 'alt="validation metric per grid setting"' in text

    transfer = tmp_path / "transfer"
    transfer.mkdir()
    rows = [{"setting": "A -> toy", "strategy": s, "metric": "recall@10", "seeds": [0, 1], "scratch_mean": 0.1,
             "scratch_std": 0.01, "mean": 0.1 + d, "std": 0.01, "diff": d, "ci": [d - 0.01, d + 0.01],
             "t_pvalue": p, "wilcoxon_pvalue": p, "verdict": v}
            for s, d, p, v in (("relearn", 0.02, 0.001, "positive transfer"), ("finetune", -0.03, 0.01, "negative transfer"))]
    (transfer / "transfer.json").write_text(json.dumps(rows))
    text = api.report(transfer).read_text()
    assert_self_contained(text)
    assert "Transfer report transfer" in headings(text)
    assert "<strong>negative transfer</strong>" in text and len(images(text)) == 1


def test_without_matplotlib_the_tables_remain(made, monkeypatch):
    from prismrec.report import plots

    monkeypatch.setattr(plots, "pyplot", lambda required=False: None)
    text = api.report(made["cmp"], made["root"] / "no-plots.html", explain=False).read_text()
    assert images(text) == [] and "matplotlib is not installed" in text
    assert "Paired tests" in headings(text) and "<code>lightgcn</code>" in text


def test_not_a_report_folder_is_a_clear_error(tmp_path):
    with pytest.raises(PrismrecError, match="neither a finished run directory"):
        api.report(tmp_path)
    with pytest.raises(PrismrecError, match="does not exist"):
        api.report(tmp_path / "nothing")


def test_a_failing_plot_never_fails_a_comparison(made, tmp_path, monkeypatch, prismrec_log):
    from prismrec.report import plots

    def broken(*a, **kw):
        raise RuntimeError("plotting library broke")

    monkeypatch.setattr(plots, "metric_bars", broken)
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "report.html").write_text("an older report, of other runs")
    res = api.compare(["pop"], str(made["data"]), tmp_path / "cmp", seeds=[0], overrides={"train": SMALL["train"]})
    assert res.report is None and (tmp_path / "cmp" / "results.md").is_file()
    assert not (tmp_path / "cmp" / "report.html").exists()
    assert any("no HTML report written" in r.getMessage() for r in prismrec_log.records)


def test_cli_report(made):
    out = made["root"] / "cli.html"
    res = CliProcess("report", made["cmp"], "--out", out, "--title", "my models").result()
    assert res.returncode == 0, str(res)
    assert f"report written to {out}" in res.stdout
    assert "<h1>my models</h1>" in out.read_text()


# --------------------------------------------------------------------------------------------- in a browser
IMAGES = "[...document.images].map(i => ({src: i.src.slice(0, 22), w: i.naturalWidth, h: i.naturalHeight}))"


@pytest.mark.skipif(chromium() is None, reason=NO_CHROMIUM)
@pytest.mark.parametrize("which", ["cmp", "seq"])
def test_report_in_headless_chromium(made, which, tmp_path):
    """The report opens without a console error, draws a page that is not blank and shows every plot."""
    path = made["cmp"] / "report.html" if which == "cmp" else api.report(made["seq"], tmp_path / "seq.html")
    page = load_page(path.resolve().as_uri(), tmp_path / "profile", evaluate={"images": IMAGES,
                                                                               "h2": "document.querySelectorAll('h2').length"})
    assert page.console_errors == [], page.console_errors
    shown = page.values["images"]
    assert len(shown) == len(images(path.read_text())) >= 4
    for img in shown:  # every plot decoded from its data: URI
        assert img["src"] == "data:image/png;base64," and img["w"] > 100 and img["h"] > 100, img
    assert page.values["h2"] >= 1
    stats = page.screenshot_stats()
    assert stats["colours"] > 100 and stats["ink"] > 0.03, stats
    assert stats["height"] > 900  # the whole page, not only the first screen


@pytest.mark.skipif(chromium() is None, reason=NO_CHROMIUM)
def test_chromium_check_sees_console_errors(tmp_path):
    """The check itself can fail: a script error, console.error and an image that does not load are caught."""
    page_file = tmp_path / "bad.html"
    page_file.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body><p>x</p>'
                         '<img src="missing.png"><script>console.error("boom"); undefinedFunction();</script>'
                         "</body></html>")
    page = load_page(page_file.as_uri(), tmp_path / "profile", full_page=False)
    text = "\n".join(page.console_errors)
    assert "console.error: boom" in text and "undefinedFunction" in text and "missing.png" in text, text
    stats = page.screenshot_stats()
    assert stats["ink"] < 0.01  # an (almost) blank page is recognised as such
