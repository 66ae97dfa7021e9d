"""analysis/reproduce.py and analysis/_environment.py: listing, refusing, and the environment block.

No analysis script runs here: only reproduce.py's own argument handling and the environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._scripts import load_script

ROOT = Path(__file__).resolve().parent.parent
REPRODUCE = ROOT / "analysis" / "reproduce.py"


def _load(name: str):
    return load_script(f"analysis/{name}.py", f"analysis_{name}")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPRODUCE), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_list_names_every_script_with_full_and_quick_estimates_from_any_directory(tmp_path):
    done = run("--list", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    reproduce = _load("reproduce")
    lines = done.stdout.splitlines()
    for name in reproduce.NAMES:
        assert any(line.split()[0] == name for line in lines), name
    assert lines[-1].startswith("total")


def test_every_script_and_benchmark_is_a_step_and_every_step_command_exists():
    reproduce = _load("reproduce")
    scripts = {p.relative_to(ROOT).as_posix() for p in [*ROOT.glob("analysis/*.py"),
                                                        *ROOT.glob("analysis/benchmarks/*.py")]}
    helpers = {"analysis/reproduce.py", "analysis/readme_tables.py"}
    helpers |= {path for path in scripts if Path(path).name.startswith("_")}  # modules the scripts import
    run_by_steps = {argv[0] for step in reproduce.STEPS for argv in (*step.full, *step.quick)}
    assert scripts - helpers <= run_by_steps, sorted(scripts - helpers - run_by_steps)
    assert all((ROOT / path).is_file() for path in run_by_steps)
    for step in reproduce.STEPS:  # a quick run never writes into the published results
        assert all("--quick" in argv for argv in step.quick), step.name


def test_only_rejects_an_unknown_name_and_says_which_exist():
    done = run("--only", "curvature", "--only", "no_such_script", "--quick")
    assert done.returncode == 2
    assert "no_such_script" in done.stderr and "bench_deepfool" in done.stderr


def test_a_full_run_refuses_uncommitted_code(monkeypatch, capsys):
    reproduce = _load("reproduce")
    monkeypatch.setattr(reproduce, "uncommitted_code", lambda: [" M boundgeo/attacks/boundary.py"])
    monkeypatch.setattr(reproduce, "run_step", lambda *a, **k: pytest.fail("no script may run"))
    assert reproduce.main(["--only", "curvature"]) == 2
    err = capsys.readouterr().err
    assert "refusing a full run" in err and "boundgeo/attacks/boundary.py" in err and "--allow-dirty" in err


def test_a_failing_script_makes_the_run_fail_after_the_others_ran(monkeypatch, tmp_path):
    reproduce = _load("reproduce")
    monkeypatch.setattr(reproduce, "QUICK", tmp_path)
    ran = []

    def fake(step, quick, tmp, commit):
        ran.append(step.name)
        return {"commands": [], "exit_code": 1 if step.name == "categories" else 0, "seconds": 0.0}

    monkeypatch.setattr(reproduce, "run_step", fake)
    assert reproduce.main(["--quick", "--only", "categories", "--only", "curvature"]) == 1
    assert ran == ["categories", "curvature"]  # in STEPS order, the second after the failure
    saved = (tmp_path / "reproduce.json").read_text()
    assert '"environment"' in saved and '"exit_code": 1' in saved


def test_written_outputs_are_checked_for_an_environment_of_the_current_scope_version(tmp_path, monkeypatch):
    reproduce = _load("reproduce")
    monkeypatch.setattr(reproduce, "model_files_changed", lambda env: None)  # tested on its own below
    step = reproduce.Step("x", (), (), ("a.json", "b.json", "c.json"), 1, 1)
    (tmp_path / "a.json").write_text('{"environment": {"scope_version": "abc", "code_clean": true}}')
    (tmp_path / "b.json").write_text('[1, 2]')
    problems = reproduce.check_outputs(step, tmp_path, 0.0, lambda name: "abc")
    assert len(problems) == 2
    assert "b.json is not a JSON object" in problems[0] and "c.json was not written" in problems[1]
    assert "environment.scope_version" in reproduce.check_outputs(step, tmp_path, 0.0, lambda name: "def")[0]
    (tmp_path / "a.json").write_text('{"environment": {"scope_version": "abc", "code_clean": false}}')
    assert "uncommitted code" in reproduce.check_outputs(step, tmp_path, 0.0, lambda name: "abc")[0]


def test_resume_skips_the_scripts_whose_results_are_current(monkeypatch, tmp_path, capsys):
    # a regeneration takes longer than one sitting: --resume picks up where the last one stopped
    reproduce = _load("reproduce")
    monkeypatch.setattr(reproduce, "RESULTS", tmp_path)
    monkeypatch.setattr(reproduce, "uncommitted_code", lambda: [])
    monkeypatch.setattr(reproduce, "current_version", lambda name: "v1")
    monkeypatch.setattr(reproduce, "model_files_changed", lambda env: None)
    (tmp_path / "curvature.json").write_text('{"environment": {"scope_version": "v1", "code_clean": true}}')
    (tmp_path / "categories.json").write_text('{"environment": {"scope_version": "v0", "code_clean": true}}')
    ran = []
    monkeypatch.setattr(reproduce, "run_step", lambda step, *a: ran.append(step.name) or
                        {"commands": [], "exit_code": 0, "seconds": 0.0})
    assert reproduce.main(["--resume", "--only", "curvature", "--only", "categories"]) == 0
    assert ran == ["categories"] and "curvature already carry the current version" in capsys.readouterr().out


def test_the_code_version_covers_the_code_and_not_the_readme_or_tests():
    env_module = _load("_environment")
    assert env_module._is_code("boundgeo/geometry/spectral.py") and env_module._is_code("analysis/benchmarks/bench_spectrum.py")
    assert env_module._is_code("pyproject.toml") and env_module._is_code("boundgeo/weights/digits_cnn.pt")
    for path in ("README.md", "tests/test_spectrum.py", "analysis/results/curvature.json", "analysis/README.md",
                 "analysis/reproduce.py", "analysis/readme_tables.py"):
        assert not env_module._is_code(path), path
    assert len(env_module.code_version()) == 16


def test_a_result_is_clean_when_nothing_uncommitted_touches_its_scope():
    env_module = _load("_environment")
    if env_module.scope(None) is None:
        pytest.skip("git history not available")
    universal, deepfool = "analysis/benchmarks/bench_universal.py", "analysis/benchmarks/bench_deepfool.py"
    elsewhere = [" M analysis/_environment.py", " M README.md", " M analysis/readme_tables.py", " M tests/test_zoo.py",
                 " M analysis/results/bench_universal.json", f" M {deepfool}"]
    assert env_module.scope_clean(elsewhere, universal) and env_module.scope_clean(elsewhere[:-1], None)
    assert not env_module.scope_clean(elsewhere, deepfool)  # its own script
    for line in (" M boundgeo/attacks/universal.py", " M pyproject.toml", "?? analysis/new_study.py",
                 f" M {universal}", " M analysis/benchmarks/_uap.py",  # imported by bench_universal
                 "?? analysis/benchmarks/_shared_helpers.py",  # not committed: it might be imported
                 f"R  analysis/benchmarks/old.py -> {universal}", "git status failed"):
        assert not env_module.scope_clean([line], universal), line
    assert not env_module.scope_clean([], universal, commit="0" * 40)  # git cannot tell: never clean


def test_the_scope_scan_reads_every_module_of_an_import_line():
    env_module = _load("_environment")
    text = ("import json\nimport bench_a, bench_b as b\n    from bench_c import helper\nimport os.path, bench_d\n"
            "from . import relative\nx = 'import'\n")
    assert env_module._imported(text) == ["json", "bench_a", "bench_b", "bench_c", "os", "bench_d"]


def test_the_shared_scope_is_the_library_and_the_studies_and_a_benchmark_adds_its_scripts():
    env_module = _load("_environment")
    shared = env_module.scope(None)
    assert "pyproject.toml" in shared and "boundgeo/weights/digits_cnn.pt" in shared
    assert "analysis/cifar10.py" in shared and "boundgeo/attacks/boundary.py" in shared
    for path in ("analysis/_environment.py", "analysis/reproduce.py", "analysis/readme_tables.py",
                 "analysis/README.md", "analysis/spectra.ipynb", "README.md"):
        assert path not in shared, path
    assert not [path for path in shared if path.startswith(("analysis/benchmarks/", "analysis/results/", "tests/"))]
    deepfool = env_module.scope("analysis/benchmarks/bench_deepfool.py")
    # bench_deepfool imports bench_imagenet_scale's ResNet-50 setup, and nothing of the other benchmarks
    assert set(deepfool) - set(shared) == {"analysis/benchmarks/bench_deepfool.py",
                                           "analysis/benchmarks/bench_imagenet_scale.py"}
    assert env_module.result_script("bench_deepfool.json") == "analysis/benchmarks/bench_deepfool.py"
    assert env_module.result_script("curvature.json") is None
    assert env_module.scope("analysis/benchmarks/no_such_script.py") is None
    assert env_module.scope_version("analysis/benchmarks/no_such_script.py") == "unknown"


def test_a_change_to_one_benchmark_leaves_the_other_results_current(tmp_path):
    # a repository of its own: the library, a study, two benchmarks (one importing the other)
    repo = tmp_path / "repo"
    (repo / "analysis" / "benchmarks").mkdir(parents=True)
    (repo / "boundgeo").mkdir()
    (repo / "analysis" / "_environment.py").write_text((ROOT / "analysis" / "_environment.py").read_text())
    files = {"pyproject.toml": "[project]\n", "boundgeo/__init__.py": "x = 1\n", "analysis/study.py": "y = 1\n",
             "analysis/benchmarks/bench_a.py": "import bench_b\n", "analysis/benchmarks/bench_b.py": "z = 1\n",
             "analysis/benchmarks/bench_c.py": "w = 1\n", "README.md": "r\n"}

    def commit(changes: dict[str, str]) -> dict[str | None, str]:
        for path, text in changes.items():
            (repo / path).write_text(text)
        for argv in (["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"]):
            subprocess.run(["git", *argv], cwd=repo, check=True, capture_output=True)
        module = load_script(repo / "analysis" / "_environment.py", f"tmp_repo_environment_{len(changes)}")
        return {script: module.scope_version(script) for script in
                (None, "analysis/benchmarks/bench_a.py", "analysis/benchmarks/bench_b.py", "analysis/benchmarks/bench_c.py")}

    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    first = commit(files)
    assert "unknown" not in first.values() and len(set(first.values())) == 4
    assert commit({"README.md": "changed\n", "analysis/_environment.py": "# recording only\n"
                   + (ROOT / "analysis" / "_environment.py").read_text()}) == first
    second = commit({"analysis/benchmarks/bench_b.py": "z = 2\n"})  # bench_a imports it
    assert [second[s] == first[s] for s in first] == [True, False, False, True]
    third = commit({"analysis/study.py": "y = 2\n"})  # the studies train the models every benchmark loads
    assert all(third[s] != second[s] for s in first)
    fourth = commit({"boundgeo/__init__.py": "x = 2\n"})
    assert all(fourth[s] != third[s] for s in first)


def test_environment_carries_commit_versions_threads_cpu_date_and_load():
    env_module = _load("_environment")
    env = env_module.environment()
    for key in ("commit", "tree_clean", "uncommitted", "torch", "numpy", "python", "torch_threads", "cpu_count",
                "cpu_model", "date_utc", "load_average_before"):
        assert key in env, key
    assert len(env["commit"]) == 40 and env["cpu_count"] == os.cpu_count()
    assert env["tree_clean"] == (not env["uncommitted"])
    assert not any(line[3:].startswith("analysis/results/") for line in env["uncommitted"])
    finished = env_module.finish(env)
    assert finished["wall_seconds"] >= 0 and len(finished["load_average_after"]) == 3
    with pytest.raises(ValueError):
        env_module.finish({"commit": "abc"})


def test_results_being_written_do_not_make_the_tree_dirty(monkeypatch):
    env_module = _load("_environment")
    porcelain = " M analysis/results/curvature.json\n?? analysis/results/quick/x.json\n M analysis/curvature.py\n"
    monkeypatch.setattr(env_module, "_git", lambda *args: (0, porcelain))
    assert env_module.uncommitted() == [" M analysis/curvature.py"]
    retrained = " M analysis/results/cifar10_resnet.pt\n M analysis/results/cifar10.json\n"
    monkeypatch.setattr(env_module, "_git", lambda *args: (0, retrained))
    assert env_module.uncommitted() == [" M analysis/results/cifar10_resnet.pt"]  # a model, not a result
    assert not env_module.scope_clean([" M analysis/results/cifar10_resnet.pt"], None, files=[])


def test_a_moved_or_changed_checkpoint_makes_the_whole_code_unclean(monkeypatch):
    """whole_code_clean reads both sides of a rename, as scope_clean does: a checkpoint renamed into
    place is a changed model, and so is code renamed out of the scope."""
    env_module = _load("_environment")
    for line in (" M analysis/results/cifar10_resnet.pt", "R  old.pt -> analysis/results/cifar10_resnet.pt",
                 "R  boundgeo/x.py -> notes/x.py", " M README.md"):
        monkeypatch.setattr(env_module, "uncommitted", lambda line=line: [line])
        assert env_module.environment()["whole_code_clean"] is (line == " M README.md"), line


def test_a_result_that_loaded_another_checkpoint_is_not_current(tmp_path, monkeypatch):
    """A retrained CIFAR-10 checkpoint is another model under the same name: the results record the
    sha256 of the trained model files, and one that differs now is stale, as is one without it."""
    env_module, reproduce = _load("_environment"), _load("reproduce")
    model = tmp_path / "analysis" / "results" / "cifar10_resnet.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"weights A")
    monkeypatch.setattr(env_module, "ROOT", tmp_path)
    recorded = env_module.model_files()
    assert recorded == {"analysis/results/cifar10_resnet.pt": hashlib.sha256(b"weights A").hexdigest()}
    assert env_module.model_files_changed({"model_files": recorded}) is None
    assert "computed before" in env_module.model_files_changed({})
    model.write_bytes(b"weights B")
    assert "cifar10_resnet.pt changed" in env_module.model_files_changed({"model_files": recorded})
    out = tmp_path / "curvature.json"
    out.write_text(json.dumps({"environment": {"scope_version": "v", "code_clean": True, "model_files": recorded}}))
    monkeypatch.setattr(reproduce, "model_files_changed", env_module.model_files_changed)
    step = reproduce.Step("curvature", (), (), ("curvature.json",), 1, 1)
    assert any("changed since" in p for p in reproduce.output_problems(step, tmp_path, lambda name: "v"))
    model.write_bytes(b"weights A")
    assert reproduce.output_problems(step, tmp_path, lambda name: "v") == []
    monkeypatch.setattr(env_module, "_git", lambda *args: (128, ""))
    assert env_module.uncommitted() == ["git status failed"]  # unknown never passes for clean


def test_bench_universal_counts_each_art_seed_once_in_its_mean():
    bench = _bench_universal()
    art = dict(library="art", method="deepfool", norm="l2", xi=3.0, fit_fooling_rate=0.5, seconds=100.0)
    rows = [dict(art, seed=0, threads=2, eval_fooling_rate=0.50),  # seed 0 ran at 2 and at 1 thread
            dict(art, seed=0, threads=1, eval_fooling_rate=0.70),
            dict(art, seed=1, threads=1, eval_fooling_rate=0.30),
            dict(library="boundgeo", method="sgd", norm="l2", xi=3.0, seed=0, eval_fooling_rate=0.55,
                 fit_fooling_rate=0.6, seconds=2.0)]
    summary = {line["library"]: line for line in bench.summarise(rows)}
    assert summary["art"]["eval_fooling_mean"] == pytest.approx((0.60 + 0.30) / 2)  # not (0.5 + 0.7 + 0.3) / 3
    assert summary["art"]["seeds"] == 2 and summary["art"]["eval_fooling_min"] == pytest.approx(0.30)
    assert summary["boundgeo"]["mean_minus_art"] == pytest.approx(0.55 - 0.45)


def _bench_universal():
    return load_script("analysis/benchmarks/bench_universal.py")


def test_bench_universal_keeps_the_models_apart_and_reads_fractions():
    bench = _bench_universal()
    art = dict(library="art", method="deepfool", norm="linf", fit_fooling_rate=0.5, seconds=100.0, seed=0, threads=1)
    ours = dict(library="boundgeo", method="sgd", norm="linf", seed=0, fit_fooling_rate=0.6, seconds=2.0,
                images=1000, alignment=0.25)
    rows = [dict(art, model="mnist", xi=0.1, eval_fooling_rate=0.10),
            dict(art, model="cifar10", xi=8 / 255, eval_fooling_rate=0.70),
            dict(ours, model="mnist", xi=0.1, eval_fooling_rate=0.20),
            dict(ours, model="cifar10", xi=8 / 255, eval_fooling_rate=0.60, images=250, alignment=0.5)]
    summary = {(line["model"], line["library"]): line for line in bench.summarise(rows)}
    assert summary["mnist", "boundgeo"]["mean_minus_art"] == pytest.approx(0.10)
    assert summary["cifar10", "boundgeo"]["mean_minus_art"] == pytest.approx(-0.10)
    assert summary["cifar10", "boundgeo"]["images"] == [250] and summary["cifar10", "boundgeo"]["alignment_mean"] == 0.5
    assert summary["mnist", "boundgeo"]["speedup_vs_art"] == pytest.approx(50.0)
    assert bench.parse_settings(["l2:1.12", "linf:8/255", "linf:10/255"], "cifar10") == bench.CIFAR_SETTINGS
    with pytest.raises(SystemExit, match="unknown settings"):
        bench.parse_settings(["linf:8/255"], "mnist")
    with pytest.raises(SystemExit, match="norm:xi"):
        bench.parse_settings(["linf:eight"], "cifar10")
    assert bench._xi_text(10 / 255) == "10/255" and bench._xi_text(0.2) == "0.2" and bench._xi_text(3.0) == "3"


def test_bench_universal_times_art_at_its_fastest_thread_count_and_never_a_random_direction():
    bench = _bench_universal()
    art = dict(model="cifar10", library="art", method="deepfool", norm="linf", xi=8 / 255, fit_fooling_rate=0.5,
               eval_fooling_rate=0.3, timing="own-core")
    rows = [dict(art, seed=0, threads=1, seconds=1000.0),  # one thread is slower on this model
            dict(art, seed=0, threads=2, seconds=800.0, eval_fooling_rate=0.32),
            dict(art, seed=1, threads=1, seconds=10.0, timing="concurrent"),  # never timed
            dict(model="cifar10", library="boundgeo", method="sgd", norm="linf", xi=8 / 255, seed=0,
                 eval_fooling_rate=0.5, fit_fooling_rate=0.6, seconds=2.0, threads=2),
            dict(model="cifar10", library="boundgeo", method="random", norm="linf", xi=8 / 255, seed=0,
                 eval_fooling_rate=0.1, fit_fooling_rate=0.1, seconds=0.001, threads=2)]
    result = {"rows": rows, "art_seconds_per_call": {"cifar10": {"1": 1.67, "2": 1.38}}}
    bench.attach_ratios(result)
    summary = {line["method"]: line for line in result["summary"] if line["library"] == "boundgeo"}
    art_line = next(line for line in result["summary"] if line["library"] == "art")
    assert art_line["median_seconds"] == 800.0 and art_line["timed_run"]["threads"] == 2
    assert art_line["timed_run"]["eval_fooling_rate"] == 0.32 and art_line["xi_text"] == "8/255"
    assert summary["sgd"]["speedup_vs_art"] == pytest.approx(400.0)
    assert "speedup_vs_art" not in summary["random"] and "speedup_vs_art" not in rows[-1]
    assert summary["random"]["mean_minus_art"] == pytest.approx(0.1 - (0.31 + 0.3) / 2)  # seed 0 counted once
    peers = result["peer_settings"]["art"]["cifar10"]
    assert peers["torch_threads"] == [2] and peers["fastest"] is True
    result["rows"] = [r for r in rows if r.get("threads") != 2 or r["library"] != "art"]  # only one thread timed
    bench.attach_ratios(result)
    assert result["peer_settings"]["art"]["cifar10"]["fastest"] is False  # said, not hidden


def test_bench_universal_steps_refuse_to_write_into_a_result_of_other_code(tmp_path, monkeypatch):
    import argparse
    import json

    bench, row = _merge_setup(monkeypatch)
    out = tmp_path / "bench_universal.json"
    out.write_text(json.dumps({"environment": {"scope_version": "s0", "code_clean": True}, "rows": [row]}))
    before = out.read_text()
    monkeypatch.setattr(bench, "load_split", lambda *a, **k: pytest.fail("refused before any work"))
    _hide_art(monkeypatch)  # the README's install has no peers: the refusal must come before ART
    for step, flags in ((bench.add_faithful, dict(art_orders=False, add_faithful=3)),
                        (bench.add_faithful, dict(art_orders=True, add_faithful=0)),
                        (bench.art_call_cost, {})):
        with pytest.raises(SystemExit, match="scope version 's0'.*other code"):
            step(argparse.Namespace(out=str(out), model="mnist", data_dir=None, fit=None, **flags))
    assert out.read_text() == before
    monkeypatch.setattr(bench, "environment", lambda **extra: {"scope_version": "s0", "code_clean": False})
    with pytest.raises(SystemExit, match="clean: False"):  # uncommitted code of the same scope either
        bench.add_faithful(argparse.Namespace(out=str(out), model="mnist", data_dir=None, fit=None,
                                              art_orders=False, add_faithful=3))


def _hide_art(monkeypatch) -> None:
    """Make every import of ART fail, as where it is not installed (the README's ``.[test]``
    install): a step that imports it before refusing fails these tests with an ImportError."""
    import sys

    for name in ("art", "art.attacks", "art.attacks.evasion", "art.estimators", "art.estimators.classification"):
        monkeypatch.setitem(sys.modules, name, None)


def _merge_setup(monkeypatch):
    """bench_universal with a fixed environment of scope version s1, and a row to merge."""
    bench = _bench_universal()
    monkeypatch.setattr(bench, "environment", lambda **extra: {"scope_version": "s1", "code_clean": True})
    monkeypatch.setattr(bench, "finish", lambda env: env)
    row = dict(model="mnist", library="boundgeo", method="sgd", norm="l2", xi=3.0, seed=0, eval_fooling_rate=0.3,
               fit_fooling_rate=0.3, seconds=1.0)
    return bench, row


def test_bench_universal_merges_only_parts_of_the_same_code(tmp_path, monkeypatch):
    import argparse
    import json

    bench, row = _merge_setup(monkeypatch)
    main = tmp_path / "main.json"
    main.write_text(json.dumps({"environment": {"scope_version": "s1", "code_clean": True},
                                "setup": {"mnist": {}}, "rows": [row]}))
    part = tmp_path / "part.json"
    part.write_text(json.dumps({"environment": {"scope_version": "s0", "code_clean": True}, "setup": {"cifar10": {}},
                                "rows": [dict(row, model="cifar10", xi=8 / 255)]}))
    args = argparse.Namespace(out=str(main), merge=[str(part)], fresh=False)
    before = main.read_text()
    with pytest.raises(SystemExit, match="other code"):
        bench.merge(args)
    assert main.read_text() == before  # refused: nothing lost
    part.write_text(part.read_text().replace('"s0"', '"s1"'))
    bench.merge(args)
    merged = json.loads(main.read_text())
    assert sorted(r["model"] for r in merged["rows"]) == ["cifar10", "mnist"]
    assert set(merged["setup"]) == {"mnist", "cifar10"} and merged["merged"][0]["part"] == "part.json"


def test_bench_universal_merges_its_parts_into_a_fresh_file(tmp_path, monkeypatch):
    import argparse
    import json

    bench, row = _merge_setup(monkeypatch)
    parts = []
    for i, model in enumerate(("mnist", "cifar10")):
        parts.append(tmp_path / f"part{i}.json")
        parts[-1].write_text(json.dumps({"environment": {"scope_version": "s1", "code_clean": True, "i": i},
                                         "setup": {model: {}}, "rows": [dict(row, model=model)]}))
    out = tmp_path / "old.json"
    out.write_text(json.dumps({"environment": {"scope_version": "s0", "code_clean": True}, "rows": [row]}))
    bench.merge(argparse.Namespace(out=str(out), merge=[str(p) for p in parts], fresh=True))
    merged = json.loads(out.read_text())
    assert merged["environment"]["i"] == 0 and sorted(r["model"] for r in merged["rows"]) == ["cifar10", "mnist"]
    assert "replaced_rows" not in merged  # the old file's rows are gone, not replaced
