"""The READMEs' measured numbers equal the JSON they are rendered from (issue 18).

Nothing is re-run: these tests read README.md, analysis/README.md and analysis/results/*.json.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path

import pytest

from tests._scripts import load_script

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "analysis" / "results"


rt = load_script("analysis/readme_tables.py", "readme_tables")
READMES = {path.relative_to(ROOT).as_posix(): path.read_text() for path in rt.READMES}


@pytest.mark.parametrize("name", sorted(READMES))
def test_every_block_equals_what_the_json_renders(name):
    diff = rt.check_text(READMES[name], RESULTS, name)
    assert diff == "", f"{name} differs from analysis/results (run `python analysis/readme_tables.py`):\n{diff}"


def test_every_renderer_is_used_and_every_marker_has_a_renderer():
    assert rt.unused(list(READMES.values())) == []
    for text in READMES.values():
        for _, name, _ in rt.blocks_in(text):
            assert name in rt.BLOCKS


def _blocks_with_digits(text):
    for m in rt.MARKER.finditer(text):
        digit = re.search(r"\d", m["body"])
        if digit:
            yield m, m.start("body") + digit.start()


def test_a_number_edited_by_hand_in_any_block_fails_the_check():
    text = READMES["README.md"] + READMES["analysis/README.md"]
    edited_blocks = 0
    for m, at in _blocks_with_digits(text):
        changed = text[:at] + ("7" if text[at] != "7" else "3") + text[at + 1:]
        diff = rt.check_text(changed, RESULTS)
        assert diff, f"editing a digit in block {m['name']!r} went unnoticed"
        assert any(line.startswith("-") and not line.startswith("---") for line in diff.splitlines())
        edited_blocks += 1
    assert edited_blocks >= 40  # every table and measured sentence, not a handful


def test_a_changed_table_cell_is_shown_in_the_diff():
    text = READMES["README.md"]
    m = next(m for m in rt.MARKER.finditer(text) if m["name"] == "deepfool-benchmark")
    body = m["body"].replace("| **3.01** |", "| **2.50** |") if "| **3.01** |" in m["body"] else None
    if body is None:  # after a regeneration the cell holds another time: change whatever it is
        body = re.sub(r"\| \*\*(\d+\.\d\d)\*\* \|", "| **0.01** |", m["body"], count=1)
    changed = text[:m.start("body")] + body + text[m.end("body"):]
    diff = rt.check_text(changed, RESULTS, "README.md")
    assert "**0.01**" in diff or "**2.50**" in diff


def test_markers_that_cannot_be_rendered_are_errors():
    with pytest.raises(rt.ReadmeError, match="no renderer"):
        rt.rendered("<!-- table:no-such-table -->\nx\n<!-- /table -->\n", RESULTS)
    with pytest.raises(rt.ReadmeError, match="closing marker"):
        rt.rendered("<!-- table:section4 -->\nx\n", RESULTS)
    with pytest.raises(rt.ReadmeError, match="missing"):
        rt.render("section4", RESULTS / "no-such-directory")


def _results_copy(tmp_path: Path) -> Path:
    target = tmp_path / "results"
    target.mkdir()
    for path in RESULTS.glob("*.json"):
        (target / path.name).symlink_to(path)
    return target


def test_section4_renders_the_same_as_a_bare_list_and_as_rows_with_an_environment(tmp_path):
    """helper A turns section4.json into {"environment": ..., "rows": [...]}: both shapes render alike."""
    results = _results_copy(tmp_path)
    rows = json.loads((RESULTS / "section4.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    (results / "section4.json").unlink()
    (results / "section4.json").write_text(json.dumps({"environment": {"threads": 2}, "rows": rows}))
    for name in ("section4", "headline-subspace", "section4-findings", "cifar10-findings"):
        assert rt.render(name, results) == rt.render(name, RESULTS)


def test_run_times_come_from_the_environment_block(tmp_path):
    results = _results_copy(tmp_path)
    data = json.loads((RESULTS / "bench_deepfool.json").read_text())
    data["environment"] = {"wall_seconds": 125.0, "threads": 2}
    (results / "bench_deepfool.json").unlink()
    (results / "bench_deepfool.json").write_text(json.dumps(data))
    assert rt.render("time-bench_deepfool", results) == "2.1 min at 2 threads"
    del data["setup"]["settings_swept"]  # a run at one setting for every library, as before issue 18
    (results / "bench_deepfool.json").write_text(json.dumps(data))
    assert rt.render("deepfool-threads", results) == "batch 128, 2 torch threads"


def test_art_thread_evidence_is_the_summary_median():
    """The README's thread sentence compares ART's whole runs at one and two threads by the
    summary's median at each count (what the table's speed-ups use, which already leaves out runs
    that were not timed or were timed on another machine), and says nothing of a count not timed."""
    art = {"model": "cifar10", "library": "art", "method": "deepfool", "norm": "l2", "xi": 1.12, "seed": 0}
    line = {**art, "xi_text": "1.12", "timed_run": {"threads": 1, "seconds": 780.0},
            "median_seconds_by_threads": {"1": 780.0, "2": 960.0}}
    text = rt.universal_art_timing({"summary": [line], "rows": []})
    assert text.startswith("one thread on the CIFAR-10 ResNet")
    assert "13 min at one thread and 16 at two at ℓ2 ξ = 1.12" in text
    line["median_seconds_by_threads"] = {"1": 780.0}  # one count timed: no comparison to show
    assert "at two" not in rt.universal_art_timing({"summary": [line], "rows": []})


def test_an_art_seed_run_at_two_thread_counts_is_shown_with_both_rates_and_the_mean_it_counts_as():
    """The table's "seed 0" column shows ART's timed run, but its mean and range count a seed run at
    one and at two threads once, as the mean of the two: the README gives both rates and that mean."""
    art = {"model": "mnist", "library": "art", "method": "deepfool", "norm": "l2", "xi": 5.0}
    rows = [dict(art, seed=0, threads=1, eval_fooling_rate=0.599), dict(art, seed=0, threads=2, eval_fooling_rate=0.569),
            dict(art, seed=1, threads=1, eval_fooling_rate=0.395)]
    text = rt.universal_art_repeats({"rows": rows})
    assert text.endswith("shows the timed run: seed 0 at ℓ2 ξ = 5 on the MNIST CNN (59.9% at one thread and "
                         "56.9% at two threads; it counts as 58.4%).")
    assert rt.universal_art_repeats({"rows": rows[:1] + rows[2:]}) == "Each of ART's seeds ran once at each setting."


def test_a_field_missing_from_the_json_names_the_block_and_the_file(tmp_path):
    results = _results_copy(tmp_path)
    data = json.loads((RESULTS / "curvature.json").read_text())
    del data["records"][0]["main"]["top_abs_median"]
    (results / "curvature.json").unlink()
    (results / "curvature.json").write_text(json.dumps(data))
    with pytest.raises(rt.ReadmeError, match=r"'curvature-cnns'.*curvature\.json.*top_abs_median"):
        rt.render("curvature-cnns", results)


def test_rendering_is_deterministic():
    first = {name: rt.render(name, RESULTS) for name in rt.BLOCKS}
    assert first == {name: rt.render(name, RESULTS) for name in rt.BLOCKS}
    assert rt.duration(59.5) == "60 s" and rt.duration(125) == "2.1 min" and rt.duration(3074.6) == "51 min"
    assert rt.sci(1.7573e-06) == "1.8e-6" and rt.sci(8.9e7) == "8.9e+7"


# ---------------------------------------------------------------- figures and files named in the READMEs

FIGURE = re.compile(r"(?:analysis/)?results/[\w{},.*-]+\.(?:png|pdf|json|md|pt)|`([\w-]+\.png)`")


def _expand(path: str) -> list[str]:
    """``results/a_{x,y}.png`` names two files."""
    m = re.search(r"\{([^}]*)\}", path)
    if not m:
        return [path]
    return [q for option in m[1].split(",") for q in _expand(path[:m.start()] + option + path[m.end():])]


def _named_files() -> list[tuple[str, str]]:
    named = []
    for readme, text in READMES.items():
        base = ROOT / "analysis"
        for m in FIGURE.finditer(text):
            raw = m[1] if m[1] else m[0]
            for path in _expand(raw):
                if m[1]:
                    named.append((readme, str(base / "results" / path)))
                elif path.startswith("analysis/"):
                    named.append((readme, str(ROOT / path)))
                else:
                    named.append((readme, str(base / path)))
    return named


def test_every_figure_and_result_file_named_in_the_readmes_exists():
    named = _named_files()
    assert len(named) >= 30
    missing = [f"{readme}: {path}" for readme, path in named
               if not (list(Path(path).parent.glob(Path(path).name)) if "*" in path else Path(path).exists())]
    assert missing == []


def test_the_figure_pattern_finds_the_readmes_figures():
    paths = {Path(p).name for _, p in _named_files()}
    assert {"section4_spectrum_mnist.png", "categories_mnist_cnn.png", "cifar10_profile.png",
            "section4_fooling_digits.png", "curvature_scale.png"} <= paths


# ---------------------------------------------------------------- provenance

def _sources() -> list[str]:
    names = {name for text in READMES.values() for _, name, _ in rt.blocks_in(text)}
    return sorted(set(itertools.chain.from_iterable(rt.BLOCKS[name].sources for name in names)))


def test_every_block_source_exists():
    assert _sources() and all((RESULTS / source).is_file() for source in _sources())


# A regeneration takes longer than a sitting (`python analysis/reproduce.py --list`), so it may be
# done in parts. A result is current while the code of its scope (analysis/_environment.py: what
# every result shares, plus a benchmark's own script) is unchanged since the commit it records.
# The results that are not current must be exactly those named here, so that a result of the wrong
# code cannot slip in unnoticed; the set empties when every result is current (the test then says
# so). The README's provenance block says which result comes from which version.
NOT_YET_REGENERATED: set[str] = set()


def _environment_module():
    return load_script("analysis/_environment.py", "_environment_for_tests")


def test_every_block_source_is_current_or_named_as_not_yet_regenerated():
    env_module = _environment_module()
    sources = _sources()
    if os.environ.get("BOUNDGEO_TIMING_README_COMMANDS") == "1":
        # .ci/time_readme_commands.py is timing this very suite, to rewrite readme_commands.json:
        # until it does, that file holds the previous run, possibly of the previous code
        sources = [source for source in sources if source != "readme_commands.json"]
    lacking, stale = set(), set()
    for source in sources:
        data = json.loads((RESULTS / source).read_text())
        env = data.get("environment") if isinstance(data, dict) else None
        if not (isinstance(env, dict) and env.get("scope_version") and env.get("code_clean") is True):
            lacking.add(source)
            continue
        script = env_module.result_script(source)
        assert env["scope"] == (script or "shared"), f"{source} records the scope {env['scope']!r}"
        current = env_module.scope_version(script)
        if current == "unknown":
            pytest.skip("git cannot list the committed code: the results' versions cannot be checked")
        if env["scope_version"] != current or env_module.model_files_changed(env):
            stale.add(source)
    assert not lacking, f"without the environment of a clean, committed run: {sorted(lacking)}"
    behind = NOT_YET_REGENERATED & set(sources)
    assert stale == behind, (
        f"results whose code has changed since they were computed: {sorted(stale)}; NOT_YET_REGENERATED "
        f"names {sorted(behind)}" + ("" if stale else " (every result is current: empty it)"))


def test_the_readme_says_its_results_predate_the_code_while_any_is_not_yet_regenerated():
    """A reader of the README cannot run reproduce.py --list: while results of older code stand,
    the README says so under its provenance table, and the caveat goes with the last of them."""
    text = (ROOT / "README.md").read_text()
    behind = NOT_YET_REGENERATED & set(_sources())
    assert ("<!-- caveat:results-predate-code -->" in text) == bool(behind)
    if behind:  # and it names exactly those
        block = text.split("<!-- caveat:results-predate-code -->")[1].split("<!-- /caveat -->")[0]
        named = set(re.findall(r"`([a-z0-9_]+\.json)`", block))
        assert named == behind, f"the caveat names {sorted(named)}; not yet regenerated: {sorted(behind)}"


def test_every_part_of_the_universal_benchmark_attacked_the_model_of_the_merged_result():
    """bench_universal's MNIST parts once attacked two trainings of the CNN (one thread for ART's,
    two for boundgeo's). Now every committed part records the fingerprint of the model it attacked,
    and the README's comparison with ART holds only while each is that of the merged result."""
    merged = json.loads((RESULTS / "bench_universal.json").read_text())["setup"]
    parts = sorted(RESULTS.glob("parts/bench_universal.*.json"))
    assert parts
    for path in parts:
        for model, setup in json.loads(path.read_text())["setup"].items():
            assert setup["model_fingerprint"] == merged[model]["model_fingerprint"], (path.name, model)


def test_the_provenance_block_names_every_result_and_version():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- text:provenance -->(.*?)<!-- /text -->", text, re.S)
    assert block, "README.md has no provenance block"
    for source in _sources():
        data = json.loads((RESULTS / source).read_text())
        assert f"`{source}`" in block[1] and data["environment"]["scope_version"] in block[1], source


def test_the_commits_named_by_the_results_hold_the_code_version_they_claim():
    """A regeneration spans several commits (results and README are committed as they come):
    each commit a result names must hold exactly the code of the version it states, so that all
    of them are one regeneration of one code; and the scope version it states must be that of its
    scope's files at that commit (which also checks those added after the run); and ``code_clean``
    must say whether any of the uncommitted files it records touched that scope."""
    env_module = _environment_module()
    checked = 0
    for path in sorted([*RESULTS.glob("*.json"), *RESULTS.glob("parts/*.json")]):
        data = json.loads(path.read_text())
        env = data.get("environment") if isinstance(data, dict) else None
        if not isinstance(env, dict) or not env.get("commit"):
            continue
        version = env_module.code_version(env["commit"])
        if version == "unknown":  # a shallow or exported checkout
            continue
        assert version == env["code_version"], (
            f"{path.name} names commit {env['commit'][:12]}, whose code version is {version}, "
            f"not the {env['code_version']} it states")
        scoped = env_module.scope_version(env_module.result_script(path.name), env["commit"])
        assert scoped == env.get("scope_version"), (
            f"{path.name} names commit {env['commit'][:12]}, whose scope version is {scoped}, "
            f"not the {env.get('scope_version')} it states")
        if "uncommitted" in env:
            clean = env_module.scope_clean(env["uncommitted"], env_module.result_script(path.name), env["commit"])
            assert env.get("code_clean") is clean, (
                f"{path.name} states code_clean {env.get('code_clean')}, but its uncommitted files "
                f"{env['uncommitted']} {'leave' if clean else 'touch'} the code of its scope")
        checked += 1
    if not checked:
        pytest.skip("git history not available: the commits the results name cannot be checked")


def _candidates_data(fast: float, median: float, *, at_full_fast: bool = False) -> dict:
    """bench_deepfool.json's fields the fewer-candidates block reads: foolbox at 10 candidates takes
    10 ms with median 1.0; one boundgeo row at k = 2 takes ``fast`` ms with median ``median``."""
    def row(library, seconds, med, **extra):
        return {"library": library, "norm": "l2", "success_rate": 1.0, "median_norm": med,
                "seconds_per_image": seconds * 1e-3, **extra}

    main = [row("boundgeo", 0.5 if at_full_fast else 2.0, 1.0), row("foolbox", 10.0, 1.0)]
    setting = {"setting": {"torch_threads": 2, "batch_size": 128}}
    found = [row("boundgeo", fast, median, variant="box_step=True, refine=1", candidates=2, **setting,
                 paired_norm_ratio_median=median, same_class_as_boundgeo=0.75, ratio_to_floor=1.2),
             row("boundgeo", 1.5, 1.0, variant="default", candidates=2, **setting, paired_norm_ratio_median=1.0,
                 same_class_as_boundgeo=0.75, ratio_to_floor=1.1),
             row("foolbox", 3.0, 1.0, variant="default", candidates=2, **setting, paired_norm_ratio_median=1.0,
                 same_class_as_boundgeo=0.75)]
    return {"rows": main, "candidates": found, "setup": {"candidates": 10}}


def test_the_candidates_verdict_needs_the_time_the_norm_and_full_success():
    block = rt.BLOCKS["deepfool-candidates"].render
    met = block(_candidates_data(0.5, 0.95))  # 0.05x foolbox's time, a shorter median
    assert "is met here only by weighing fewer classes" in met and "at k = 2 (ℓ2: 0.050x" in met
    assert "the same class as with all 10 for 75% of the inputs" in met
    assert "| ℓ2 | 2 | boundgeo `box_step=True, refine=1` | 2 / 128 | 100% | 0.9500 |" in met
    slow = block(_candidates_data(0.7, 0.95))  # 0.07x: over the target
    assert "No row meets issue 17's target" in slow and "at 0.070x" in slow
    long = block(_candidates_data(0.5, 1.01))  # fast, but a longer median than foolbox's
    assert "No row meets issue 17's target" in long
    assert "the closest with foolbox's median or less is **boundgeo** at k = 2 (ℓ2), at 0.150x." in long
    longer = _candidates_data(0.5, 1.01)
    for row in longer["candidates"]:
        row["median_norm"] = 1.01
    longer = block(longer)  # no row is as short as foolbox: nothing is named as the closest
    assert "No row meets issue 17's target" in longer and "closest" not in longer
    both = block(_candidates_data(0.5, 0.95, at_full_fast=True))  # a 10-candidate row meets it too
    assert "is met at 10 candidates by **boundgeo** (ℓ2), and with fewer by" in both
    assert "At equal k boundgeo's default takes 0.50–0.50x foolbox's time" in met
    # a median within 0.05% of foolbox's is foolbox's (the tables show four digits); 0.1% longer is not
    assert "is met here" in block(_candidates_data(0.5, 1.0004))
    assert "No row meets" in block(_candidates_data(0.5, 1.001))
    unsure = _candidates_data(0.5, 0.95)
    unsure["candidates"][0]["success_rate"] = 0.998  # foolbox's success, but not 100%: not the target
    unsure["rows"][1]["success_rate"] = 0.998
    assert "No row meets" in block(unsure)


def test_a_fast_row_at_all_candidates_that_misses_the_norm_is_named_with_its_median():
    block = rt.BLOCKS["deepfool-candidates"].render
    data = _candidates_data(0.7, 0.95)
    data["rows"].insert(1, {"library": "boundgeo nearest=1", "variant": "nearest=1", "norm": "l2",
                            "success_rate": 1.0, "median_norm": 1.006, "seconds_per_image": 0.59e-3})
    text = block(data)
    assert "No row meets issue 17's target" in text
    assert ("At 10 candidates within 0.06x foolbox's time, but longer than its median or short of 100% success: "
            "boundgeo `nearest=1` (ℓ2: 0.059x, median 1.006x foolbox's, success 100%).") in text
    data["rows"][1]["seconds_per_image"] = 0.61e-3  # over the time: not named
    assert "At 10 candidates within" not in block(data)
    data["rows"][1].update(seconds_per_image=0.59e-3, median_norm=1.0)  # meets the target: named as meeting it
    met = block(data)
    assert "is met at 10 candidates by boundgeo `nearest=1` (ℓ2)" in met and "At 10 candidates within" not in met


def test_the_cifar_target_sentence_needs_the_time_the_success_and_the_norm():
    def row(ratio, median, success=1.0):
        return {"model": "CIFAR-10 ResNet (x)", "norm": "l2", "variant": "default", "time_ratio_to_foolbox": ratio,
                "success_rate": success, "foolbox_success_rate": 1.0, "median_norm": median,
                "foolbox_median_norm": 1.0}

    def short(r):
        return "CIFAR-10 ResNet ℓ2 default"

    assert "is met by CIFAR-10 ResNet ℓ2 default (0.14x)" in rt._cifar_target([row(0.14, 1.0)], short)
    for bad in (row(0.16, 1.0), row(0.14, 1.01), row(0.14, 1.0, success=0.99)):
        assert rt._cifar_target([bad], short).startswith("No CIFAR-10 ResNet row meets")
    assert rt._cifar_target([], short) == ""


@pytest.mark.parametrize("speedup, shown, used", [(2.02, "101% (above 100% only by timing noise", "x 1.00 x G"),
                                                  (1.90, "95%. That is optimistic", "x 0.95 x G")])
def test_the_gpu_projection_never_assumes_more_than_perfect_scaling(speedup, shown, used):
    """Two one-thread processes cannot do more than twice one's work: a measured speed-up above 2
    is timing noise, shown as measured, and the projection to 8 GPUs uses 100%."""
    data = json.loads((RESULTS / "bench_distributed.json").read_text())
    scale = json.loads((RESULTS / "bench_imagenet_scale.json").read_text())
    data["speedup_two_processes_vs_one_thread"] = speedup
    text = " ".join(rt.distributed(data, scale).split())
    assert f"parallel efficiency measured above, {shown}" in text and used in text
