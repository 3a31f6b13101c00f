"""prismrec tune on Optuna (prismrec.study): TPE finds the known best region, pruning stops weak trials,
two workers share one journal (or one PostgreSQL database) without running a trial twice, and a study
resumes after SIGKILL of a worker. Training is a stand-in with a known optimum (as in test_tune.py), so
every test takes seconds."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="optuna is not installed (pip install 'prismrec[tune]')")

from prismrec import study as study_module  # noqa: E402
from prismrec.search_space import Choice, FloatRange, IntRange, model_space, parse_space  # noqa: E402
from prismrec.study import (StudySpec, load_spec, open_study, run_worker, search_cost, status_text,  # noqa: E402
                            study_status, tune_study, write_spec)
from prismrec.errors import PrismrecError  # noqa: E402

from conftest import cli_env  # noqa: E402

# the stand-in's validation value: best at learning rate 10^-2.5 and n_layers 2
STAND_IN = '''
import json, math, os, time
from pathlib import Path
from types import SimpleNamespace


def score(overrides):
    lr = overrides.get("train.learning_rate", 1e-3)
    layers = overrides.get("lightgcn.n_layers", 2)
    return 0.5 - 0.1 * (math.log10(lr) + 2.5) ** 2 - 0.05 * (layers - 2) ** 2


def make_fake(sleep=0.0, epochs=3, log=None):
    def train_run(model, data, out, *, overrides, seed, on_epoch=None, resume=False, test=True, **kw):
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "started").write_text("")  # as a real run's config.yaml: the folder is not empty once started
        if log is not None:
            with open(log, "a") as f:
                f.write(json.dumps({"dir": out.parent.name, "pid": os.getpid(), "resume": bool(resume)}) + "\\n")
        value = score(overrides)
        for epoch in range(1, epochs + 1):
            time.sleep(sleep)
            if on_epoch:
                on_epoch({"epoch": epoch, "valid": {"recall@20": value * epoch / epochs}})
        m = {"model": model, "best_epoch": epochs, "epochs_run": epochs, "valid": {"recall@20": value},
             "test": {}, "test_skipped": not test}
        (out / "metrics.json").write_text(json.dumps(m))
        return SimpleNamespace(metrics=m)
    return train_run
'''
ns: dict = {}
exec(STAND_IN, ns)
make_fake, score = ns["make_fake"], ns["score"]

WORKER = '''
import sys
sys.path.insert(0, {here!r})
from prismrec import study
exec(open({stand_in!r}).read())
study.train_run = make_fake(sleep={sleep}, log={log!r})
study.run_worker(sys.argv[1], int(sys.argv[2]))
'''


def lightgcn_space():
    return model_space("lightgcn", parse_space(["learning_rate=loguniform(1e-4,1e-1)", "n_layers=int(1,4)",
                                                "reg_weight=none", "reg_type=none"]))


def spec_for(out: Path, folder: Path, **kw) -> StudySpec:
    base = dict(model="lightgcn", data=str(folder), space=lightgcn_space(), storage=str(out / "study.journal"),
                study_name="t", trials=6, prune=False, select="recall@20")
    base.update(kw)
    return StudySpec(**base)


def start_worker(tmp: Path, out: Path, worker_id: int, sleep: float, log: Path) -> subprocess.Popen:
    (tmp / "stand_in.py").write_text(STAND_IN)
    script = tmp / "worker.py"
    script.write_text(WORKER.format(here=str(Path(__file__).parent), stand_in=str(tmp / "stand_in.py"), sleep=sleep,
                                    log=str(log)))
    return subprocess.Popen([sys.executable, str(script), str(out), str(worker_id)], env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=open(tmp / f"worker-{worker_id}.err", "w"))


def counts(out: Path, storage: str | None = None) -> dict[str, int]:
    spec = load_spec(out)
    if storage:
        spec.storage = storage
    st = open_study(spec)
    c: dict[str, int] = {}
    for t in st.get_trials(deepcopy=False):
        c[t.state.name] = c.get(t.state.name, 0) + 1
    return c


# ------------------------------------------------------------------------------------------------------
def test_spaces_parse_and_every_model_searches_the_learning_rate():
    sp = parse_space(["learning_rate=loguniform(1e-4,1e-2)", "n_layers=[1,2,3]", "dropout=uniform(0,0.5)",
                      "knn_k=int(5,20,5)", "reg_weight=none"])
    assert sp["learning_rate"] == FloatRange(1e-4, 1e-2, log=True) and sp["n_layers"] == Choice((1, 2, 3))
    assert sp["knn_k"] == IntRange(5, 20, 5) and sp["reg_weight"] is None
    space = model_space("lightgcn", {k: sp[k] for k in ("learning_rate", "n_layers", "reg_weight")})
    assert "reg_weight" not in space and space["train.learning_rate"].log and space["n_layers"] == Choice((1, 2, 3))
    from prismrec.models import MODELS
    for name in MODELS.names():
        if MODELS.get(name).trainable:
            assert "train.learning_rate" in model_space(name), name
    assert "mm_image_weight" in model_space("freedom") and "mm_image_weight" in model_space("lirdrec")


def test_tpe_finds_the_known_best_region_and_scores_no_test(mmrec_folder, tmp_path, monkeypatch):
    folder, _ = mmrec_folder
    calls = []
    fake = make_fake()
    monkeypatch.setattr(study_module, "train_run", lambda *a, **k: calls.append(k) or fake(*a, **k))
    res = tune_study("lightgcn", str(folder), tmp_path / "s", space={"reg_weight": None, "reg_type": None,
                                                                      "learning_rate": FloatRange(1e-4, 1e-1, True)},
                     trials=30, final_seeds=(), prune=False)
    assert math.log10(res.best_params["train.learning_rate"]) == pytest.approx(-2.5, abs=0.5)
    assert res.best_params["n_layers"] == 2
    assert all(k["test"] is False for k in calls)  # trials record validation only
    assert "test" not in (tmp_path / "s" / "trials.csv").read_text().split("\n")[0]
    assert len(res.trials) == 30


def test_pruning_stops_clearly_worse_trials_early(mmrec_folder, tmp_path, monkeypatch):
    folder, _ = mmrec_folder

    def train_run(model, data, out, *, overrides, seed, on_epoch=None, **kw):
        out.mkdir(parents=True, exist_ok=True)
        good = overrides["lightgcn.n_layers"] >= 3
        for epoch in range(1, 11):
            on_epoch({"epoch": epoch, "valid": {"recall@20": (0.5 if good else 0.01) + 0.001 * epoch}})
        m = {"best_epoch": 10, "epochs_run": 10, "valid": {"recall@20": 0.51 if good else 0.02}}
        return type("R", (), {"metrics": m})()

    monkeypatch.setattr(study_module, "train_run", train_run)
    res = tune_study("lightgcn", str(folder), tmp_path / "p", space={"reg_weight": None, "reg_type": None,
                                                                      "learning_rate": None},
                     trials=12, final_seeds=(), prune=True, prune_startup=2, prune_warmup=1)
    t = res.trials
    pruned = t[t["state"] == "pruned"]
    assert len(pruned) >= 1
    assert (pruned["param_n_layers"] < 3).all() and (pruned["epochs_run"] < 10).all()
    for d in pruned["run_dir"]:
        assert (Path(d) / "seed-0" / "pruned.json").is_file()  # the pruned run is kept and marked
    saved = 1 - t["epochs_run"].sum() / (10 * len(t))
    assert saved > 0
    # the study's own account of it (tune.md, tune --status): every complete trial ran 10 epochs, so each pruned
    # one is counted as 10 - its epochs; the seconds are the complete and pruned trials' durations
    cost = search_cost(t)
    assert cost["epochs"] == t["epochs_run"].sum()
    assert cost["saved_epochs"] == pytest.approx((10 - pruned["epochs_run"]).sum())
    assert cost["seconds"] == pytest.approx(t["seconds"].sum()) and t["seconds"].notna().all()
    assert f"pruning saved about {cost['saved_epochs']:.0f} epochs" in (tmp_path / "p" / "tune.md").read_text()
    assert f"spent: {cost['epochs']} epochs in all" in status_text(study_status(tmp_path / "p"))


def _check_two_workers(out: Path, log: Path, trials: int, storage: str | None = None) -> None:
    c = counts(out, storage)
    assert c.get("COMPLETE", 0) == trials and c.get("RUNNING", 0) == 0, c
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    dirs = [r["dir"] for r in runs]
    assert len(dirs) == len(set(dirs)) == trials  # no trial trained twice
    assert len({r["pid"] for r in runs}) == 2  # both workers took part


def test_two_workers_on_one_journal_never_run_the_same_trial(mmrec_folder, tmp_path):
    folder, _ = mmrec_folder
    out = tmp_path / "j"
    write_spec(out, spec_for(out, folder, trials=6))
    log = tmp_path / "runs.log"
    procs = [start_worker(tmp_path, out, i, 0.15, log) for i in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0, (tmp_path / "worker-0.err").read_text()[-2000:]
    _check_two_workers(out, log, 6)
    once = tmp_path / "once"  # the two workers tried the settings one process would have tried
    write_spec(once, spec_for(once, folder, trials=6))
    run_worker(once)
    assert sorted(drawn(out)) == sorted(drawn(once))


def test_a_study_resumes_after_sigkill_of_a_worker(mmrec_folder, tmp_path, monkeypatch):
    folder, _ = mmrec_folder
    out = tmp_path / "k"
    write_spec(out, spec_for(out, folder, trials=4))
    log = tmp_path / "runs.log"
    proc = start_worker(tmp_path, out, 0, 0.4, log)
    deadline = time.time() + 60
    while time.time() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < 2):
        time.sleep(0.1)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)  # mid-trial: trial 1 is RUNNING
    proc.wait()
    assert counts(out).get("RUNNING") == 1
    monkeypatch.setattr(study_module, "train_run", make_fake(log=str(log)))
    run_worker(out)  # resume: the dead worker's trial is failed and queued again, the budget completed
    spec = load_spec(out)
    st = open_study(spec)
    states = [t.state.name for t in st.get_trials()]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 4 and "RUNNING" not in states
    failed = next(t for t in st.get_trials() if t.state.name == "FAIL")
    retry = [t for t in st.get_trials() if t.user_attrs.get("retry_of") == failed.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == failed.params
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(r["dir"] == f"trial-{failed.number:04d}" and r["resume"] for r in runs)  # continued, not restarted
    # the kill changed nothing in what was tried: the settings of the same study run once in one process
    once = tmp_path / "once"
    write_spec(once, spec_for(once, folder, trials=4))
    run_worker(once)
    assert drawn(out) == drawn(once)


def test_two_workers_share_one_postgresql_study(mmrec_folder, tmp_path, postgres_url):
    pytest.importorskip("sqlalchemy")
    folder, _ = mmrec_folder
    out = tmp_path / "pg"
    write_spec(out, spec_for(out, folder, trials=6, storage=postgres_url, study_name=f"pg-{os.getpid()}"))
    log = tmp_path / "runs.log"
    procs = [start_worker(tmp_path, out, i, 0.15, log) for i in range(2)]
    for i, p in enumerate(procs):
        assert p.wait(timeout=120) == 0, (tmp_path / f"worker-{i}.err").read_text()[-2000:]
    _check_two_workers(out, log, 6)


def test_the_pruning_warmup_is_a_cli_option(tmp_path):
    """``tune --prune-warmup N`` reaches the study (saved, and stated in its protocol line)."""
    out = tmp_path / "warm"
    proc = subprocess.run([sys.executable, "-m", "prismrec", "-q", "tune", "-m", "bpr", "-d", "demo", "-o", str(out),
                           "--trials", "1", "--epochs", "1", "--final-seeds", "", "--prune-warmup", "5",
                           "--set", "train.threads=1"], env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "study.json").read_text())["prune_warmup"] == 5
    assert "median pruning after 5 epochs" in (out / "tune.md").read_text()


def test_status_of_a_compare_folder_lists_every_entry(mmrec_folder, tmp_path, monkeypatch):
    """``tune --status OUT`` on a ``compare --tune`` folder prints each entry's study."""
    from prismrec.cli.tune_cli import run_tune_command

    folder, _ = mmrec_folder
    monkeypatch.setattr(study_module, "train_run", make_fake())
    for entry in ("lightgcn", "lightgcn_n_layers=1"):
        tune_study("lightgcn", str(folder), tmp_path / "cmp" / entry / "tune", space={"reg_type": None},
                   trials=2, final_seeds=(), prune=False)
    printed: list[str] = []
    run_tune_command({"status": tmp_path / "cmp", "storage": None}, printed.append)
    text = "\n".join(printed)
    assert text.count("trials: 2 complete") == 2
    assert "lightgcn: study" in text and "lightgcn_n_layers=1: study" in text


def test_a_study_folder_names_its_own_journal_from_any_folder_and_after_a_move(mmrec_folder, tmp_path, monkeypatch):
    """A study started with a relative --out is read from another working folder and after its folder is moved:
    status, a joining worker and a resume all open that folder's journal (never a new, empty one elsewhere)."""
    folder, _ = mmrec_folder
    monkeypatch.setattr(study_module, "train_run", make_fake())
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    tune_study("lightgcn", str(folder), Path("s"), space={"reg_type": None}, trials=2, final_seeds=(), prune=False)
    assert json.loads((tmp_path / "a" / "s" / "study.json").read_text())["storage"] == ""
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    assert study_status(tmp_path / "a" / "s")["complete"] == 2
    (tmp_path / "a" / "s").rename(tmp_path / "moved")
    assert study_status(tmp_path / "moved")["complete"] == 2
    tune_study("lightgcn", str(folder), tmp_path / "moved", space={"reg_type": None}, trials=3, final_seeds=(),
               prune=False)  # a resume from here adds one trial to the moved study
    assert study_status(tmp_path / "moved")["complete"] == 3
    assert not list((tmp_path / "b").rglob("study.journal")) and not (tmp_path / "a" / "s").exists()
    journal = (tmp_path / "moved" / "study.journal").read_bytes()
    study_status(tmp_path / "moved")
    assert (tmp_path / "moved" / "study.journal").read_bytes() == journal  # a status read writes nothing
    tune_study("lightgcn", str(folder), tmp_path / "moved", space={"reg_type": None}, trials=3, final_seeds=(),
               prune=False)  # nor does the resume of a finished study (a table assembled again from its studies)
    assert (tmp_path / "moved" / "study.journal").read_bytes() == journal
    (tmp_path / "moved" / "study.journal").unlink()
    with pytest.raises(PrismrecError, match="holds no study"):
        study_status(tmp_path / "moved")
    assert not (tmp_path / "moved" / "study.journal").exists()


def test_a_study_json_written_with_a_relative_journal_path_still_opens_its_own_journal(mmrec_folder, tmp_path,
                                                                                          monkeypatch):
    """study.json files written before 2026-12-05 recorded the default journal relative to where the study was
    started; read from elsewhere, that path names this folder's journal."""
    folder, _ = mmrec_folder
    monkeypatch.setattr(study_module, "train_run", make_fake())
    out = tmp_path / "s"
    tune_study("lightgcn", str(folder), out, space={"reg_type": None}, trials=2, final_seeds=(), prune=False)
    old = json.loads((out / "study.json").read_text())
    (out / "study.json").write_text(json.dumps({**old, "storage": "bench_out/x/s/study.journal"}))
    monkeypatch.chdir(tmp_path)
    assert load_spec(out).storage == str((out / "study.journal").resolve())
    assert study_status(out)["complete"] == 2 and not (tmp_path / "bench_out").exists()


def test_protocol_line_says_when_a_tpe_budget_is_only_random_draws():
    from prismrec.study import TPE_STARTUP, tpe_startup_note

    assert "random start-up" in tpe_startup_note(6) and "6" in tpe_startup_note(6)
    assert "random start-up" in tpe_startup_note(TPE_STARTUP)
    assert tpe_startup_note(TPE_STARTUP + 1) == "" and tpe_startup_note(None) == ""


def test_start_at_defaults_makes_the_run_settings_the_first_trial_once(mmrec_folder, tmp_path, monkeypatch):
    folder, _ = mmrec_folder
    seen: list[dict] = []

    def train_run(model, data, out, *, overrides, seed, on_epoch=None, **kw):
        seen.append(dict(overrides))
        m = {"best_epoch": 1, "epochs_run": 1, "valid": {"recall@20": 0.1 * overrides["lightgcn.n_layers"]}}
        return type("R", (), {"metrics": m})()

    monkeypatch.setattr(study_module, "train_run", train_run)
    space = {"reg_type": None, "learning_rate": FloatRange(1e-4, 1e-2, True), "reg_weight": FloatRange(0.5, 0.9)}
    out = tmp_path / "d"
    tune_study("lightgcn", str(folder), out, space=space, trials=3, final_seeds=(), prune=False,
               overrides=["lightgcn.n_layers=2"], start_at_defaults=True)
    first = seen[0]
    # the run's own settings: the learning rate default (1e-3) and the --set layer count; reg_weight's
    # default (1e-4) lies outside uniform(0.5, 0.9), so the sampler drew it
    assert first["train.learning_rate"] == pytest.approx(1e-3) and first["lightgcn.n_layers"] == 2
    assert 0.5 <= first["lightgcn.reg_weight"] <= 0.9
    assert "the first trial at the defaults" in (out / "tune.md").read_text()
    # resumed with a larger budget: the defaults are not queued a second time
    tune_study("lightgcn", str(folder), out, space=space, trials=5, final_seeds=(), prune=False,
               overrides=["lightgcn.n_layers=2"], start_at_defaults=True)
    assert len(seen) == 5
    assert sum(s["train.learning_rate"] == pytest.approx(1e-3) and s["lightgcn.n_layers"] == 2 for s in seen[1:]) == 0


def test_a_choice_of_lists_is_searched_queued_and_read_back_as_lists(mmrec_folder, tmp_path, monkeypatch):
    """Optuna stores only plain choices: the lr schedule ``[[1.0, 50], [0.99, 1]]`` goes in as JSON text and
    comes back as the list the Trainer reads, in the trials, the selected setting and a restored study."""
    folder, _ = mmrec_folder
    seen: list[dict] = []

    def train_run(model, data, out, *, overrides, seed, on_epoch=None, **kw):
        seen.append(dict(overrides))
        sched = overrides["train.lr_scheduler"]
        m = {"best_epoch": 1, "epochs_run": 1, "valid": {"recall@20": 0.2 if list(sched) == [0.99, 1] else 0.1}}
        return type("R", (), {"metrics": m})()

    monkeypatch.setattr(study_module, "train_run", train_run)
    space = parse_space(["train.lr_scheduler=[[1.0,50],[0.99,1]]", "reg_type=none", "reg_weight=none",
                         "learning_rate=none", "n_layers=[2]"])
    out = tmp_path / "lists"
    res = tune_study("lightgcn", str(folder), out, space=space, trials=4, final_seeds=(), prune=False,
                     overrides=["train.lr_scheduler=[0.99,1]"], start_at_defaults=True)
    assert seen[0]["train.lr_scheduler"] == [0.99, 1]  # the queued defaults, read back as a list
    assert all(list(s["train.lr_scheduler"]) in ([1.0, 50], [0.99, 1]) for s in seen)
    assert res.best_params["train.lr_scheduler"] == [0.99, 1]
    spec = json.loads((out / "study.json").read_text())
    assert spec["space"]["train.lr_scheduler"] == "[[1.0, 50], [0.99, 1]]"
    res = tune_study("lightgcn", str(folder), out, space=space, trials=5, final_seeds=(), prune=False,
                     overrides=["train.lr_scheduler=[0.99,1]"], start_at_defaults=True)
    assert len(seen) == 5 and res.best_params["train.lr_scheduler"] == [0.99, 1]


def test_a_study_saved_before_a_new_setting_existed_still_resumes(mmrec_folder, tmp_path, monkeypatch):
    folder, _ = mmrec_folder
    monkeypatch.setattr(study_module, "train_run", make_fake())
    out = tmp_path / "old"
    tune_study("lightgcn", str(folder), out, space={"reg_type": None}, trials=1, final_seeds=(), prune=False)
    spec = json.loads((out / "study.json").read_text())
    del spec["start_at_defaults"]  # as written by an earlier version
    (out / "study.json").write_text(json.dumps(spec))
    res = tune_study("lightgcn", str(folder), out, space={"reg_type": None}, trials=2, final_seeds=(), prune=False)
    assert len(res.trials) == 2


def drawn(res_or_out) -> list[tuple]:
    """The settings a study drew (queued trials and retries left out), in trial order."""
    st = open_study(load_spec(res_or_out))
    return [tuple(sorted(t.params.items())) for t in st.get_trials(deepcopy=False)
            if study_module.drew_its_setting(t) and t.params]


def test_the_start_up_draws_are_optunas_own_tpe_draws(mmrec_folder, tmp_path, monkeypatch):
    """An uninterrupted one-process study draws what Optuna's TPESampler(seed) draws (tables measured before the
    draws were numbered keep their settings)."""
    folder, _ = mmrec_folder
    monkeypatch.setattr(study_module, "train_run", make_fake())
    space = {"reg_type": None, "reg_weight": None, "learning_rate": FloatRange(1e-4, 1e-2, True),
             "n_layers": Choice((1, 2, 3, 4))}
    out = tmp_path / "u"
    tune_study("lightgcn", str(folder), out, space=space, trials=5, final_seeds=(), prune=False)
    plain = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(
        seed=0, constant_liar=True, n_startup_trials=study_module.TPE_STARTUP))
    plain.optimize(lambda t: (t.suggest_float("train.learning_rate", 1e-4, 1e-2, log=True),
                              t.suggest_categorical("n_layers", [1, 2, 3, 4]))[0], n_trials=5)
    assert drawn(out) == [tuple(sorted(t.params.items())) for t in plain.trials]


def test_a_resumed_study_draws_what_an_uninterrupted_one_draws(mmrec_folder, tmp_path, monkeypatch):
    """TPE's random start-up draws are numbered: a study stopped after 2 trials and resumed to 5 tries the same
    five settings as one run to 5 at once (and never an earlier setting again)."""
    folder, _ = mmrec_folder
    monkeypatch.setattr(study_module, "train_run", make_fake())
    space = {"reg_type": None, "learning_rate": FloatRange(1e-4, 1e-2, True)}
    kw = dict(space=space, final_seeds=(), prune=False)
    tune_study("lightgcn", str(folder), tmp_path / "once", trials=5, **kw)
    tune_study("lightgcn", str(folder), tmp_path / "r", trials=2, **kw)
    res = tune_study("lightgcn", str(folder), tmp_path / "r", trials=5, **kw)
    lrs = res.trials["param_train.learning_rate"].round(12).tolist()
    assert len(lrs) == 5 and len(set(lrs)) == 5, lrs
    assert drawn(tmp_path / "r") == drawn(tmp_path / "once")


def test_the_pruning_warmup_defaults_to_the_patience_and_a_resume_keeps_its_own(mmrec_folder, tmp_path, monkeypatch):
    folder, _ = mmrec_folder
    monkeypatch.setattr(study_module, "train_run", make_fake())
    kw = dict(space={"reg_type": None}, final_seeds=(), overrides=["train.patience=7"])
    res = tune_study("lightgcn", str(folder), tmp_path / "w", trials=1, **kw)
    assert res.spec.prune_warmup == 7 and "median pruning after 7 epochs" in (tmp_path / "w" / "tune.md").read_text()
    tune_study("lightgcn", str(folder), tmp_path / "k", trials=1, prune_warmup=2, **kw)
    assert tune_study("lightgcn", str(folder), tmp_path / "k", trials=2, **kw).spec.prune_warmup == 2


def test_the_setting_is_selected_only_after_every_running_trial_ends(mmrec_folder, tmp_path, monkeypatch):
    # a worker joined from another shell may still train the study's last trial when this process's own
    # workers are done: selecting then ignored it, though it was the best (tiktok LGMRec, 2026-12-04)
    import socket
    import threading

    from prismrec.study import finish_study

    folder, _ = mmrec_folder
    out = tmp_path / "w"
    monkeypatch.setattr(study_module, "train_run", make_fake())
    monkeypatch.setattr(study_module, "WAIT_POLL_SECONDS", 0.05)
    write_spec(out, spec_for(out, folder, trials=1))
    run_worker(out)  # trial 0 complete
    write_spec(out, spec_for(out, folder, trials=2))  # the budget raised; trial 1 runs "elsewhere"
    st = open_study(load_spec(out))
    first = st.get_trials()[0]
    other = st.ask(fixed_distributions=first.distributions)
    other.set_user_attr("host", socket.gethostname())
    other.set_user_attr("pid", os.getpid())  # a live process: not a killed worker's trial
    finished = threading.Timer(0.5, lambda: st.tell(other, first.value + 1.0))
    finished.start()
    t0 = time.monotonic()
    res = finish_study(out, final_seeds=())
    finished.join()
    assert time.monotonic() - t0 >= 0.4  # it waited
    assert res.best_value == pytest.approx(first.value + 1.0) and res.best_params == other.params
