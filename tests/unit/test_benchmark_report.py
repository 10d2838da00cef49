"""BENCHMARKS.md and README.md tables are the result files' numbers, not hand-copied ones."""

import pytest

from benchmarks import common, report


def test_every_generated_table_matches_its_result_file():
    assert report.main(["--check"]) == 0, "run: python -m benchmarks.report"


def test_a_hand_edited_table_is_caught():
    document = report.DOCUMENTS[0].read_text()
    block = report.BLOCK.search(document)
    edited = document.replace(block["body"], block["body"].replace("|", "| 9.99 |", 2), 1)
    assert edited != document and report.render(edited) == document


def test_every_block_in_the_documents_has_a_generator():
    names = {match["name"] for document in report.DOCUMENTS for match in report.BLOCK.finditer(document.read_text())}
    assert names == set(report.GENERATORS)


def test_a_hand_edited_number_in_a_generated_phrase_is_caught():
    document = report.DOCUMENTS[1].read_text()  # README: phrases inside hand-written sentences
    phrase = next(match for match in report.BLOCK.finditer(document) if not match["newline"])
    edited = document.replace(phrase.group(0), phrase["begin"] + "about 3× faster" + phrase["end"], 1)
    assert edited != document and report.render(edited) == document


def test_an_inline_block_at_the_start_of_a_line_is_refused():
    # Markdown would take a line that opens with a comment for an HTML block and cut the paragraph there.
    text = "A sentence that goes on\n<!-- begin: config3-checkpoints-50 -->x<!-- end: config3-checkpoints-50 --> and ends.\n"
    with pytest.raises(SystemExit, match="starts a line"):
        report.render(text)
    assert "50-step CONFIG_3 run" in report.render(text.replace("\n<!--", " <!--"))


def test_the_requirements_phrase_refuses_torch(tmp_path, monkeypatch):
    (tmp_path / "requirements.txt").write_text("# comment\nmatplotlib>=3.5  # the Stats node\n")
    monkeypatch.setattr(report, "ROOT", tmp_path)
    assert report.readme_requirements() == "`matplotlib>=3.5`"
    (tmp_path / "requirements.txt").write_text("matplotlib>=3.5\ntorch>=2.0\n")
    with pytest.raises(SystemExit, match="torch"):
        report.readme_requirements()


def _tradeoff_result(ca_tome_share, checkpoint_steps):
    """A tradeoff.json in miniature: unpatched 10 s, matching steps 8/6 s and cached 7/5 s at 20/40 %."""
    steps = {common.UNPATCHED: {"median": 10.0}}
    for share, matching, cached in ((0.2, 8.0, 7.0), (0.4, 6.0, 5.0)):
        steps[common.speed_variant(common.MATCHING, share)] = {"median": matching}
        steps[common.speed_variant(common.CACHED, share)] = {"median": cached}
    row = {"target": 0.2, "ssim": 0.9, "psnr": 30.0}
    return {"shares": [0.2, 0.4], "steps": 10,
            "speed": {"sd15": {"shape": "x", "steps": steps}},
            "fidelity": {"sd15": {"ca_tome": [{**row, "threshold": 0.8, "merged_fraction": ca_tome_share,
                                               "checkpoint_steps": checkpoint_steps}],
                                  "fixed_ratio": [{**row, "merged_fraction": 0.2}]}}}


def test_tradeoff_speed_weighs_checkpoint_steps_as_matching_and_the_rest_as_cached():
    points = common.tradeoff_points(_tradeoff_result(0.2, [0, 5]), "sd15")
    assert points["ca_tome"][0]["speed_up"] == pytest.approx(10 / ((2 * 8 + 8 * 7) / 10))
    assert points["fixed_ratio"][0]["speed_up"] == pytest.approx(10 / 8)
    assert not points["ca_tome"][0]["interpolated"]


def test_tradeoff_step_times_between_and_below_the_timed_shares_are_interpolated():
    result = _tradeoff_result(0.3, list(range(10)))  # every step a checkpoint: matching steps only
    point = common.tradeoff_points(result, "sd15")["ca_tome"][0]
    assert point["speed_up"] == pytest.approx(10 / 7) and point["interpolated"]
    assert common.step_seconds_at(result, "sd15", common.MATCHING, 0.1) == pytest.approx(9.0)  # toward the unpatched 10 s
    assert common.step_seconds_at(result, "sd15", common.MATCHING, 0.5) == pytest.approx(5.0)  # the last segment extended




def test_a_dit_run_is_timed_as_the_median_of_its_repeats_over_steps_1_to_n():
    repeated = {"step_seconds": [[9.0, 1.0, 2.0], [9.0, 5.0, 5.0], [9.0, 2.0, 2.0]], "run_seconds": [3.0, 10.0, 4.0]}
    assert report.dit_run_seconds(repeated) == 4.0


def test_a_repeated_run_is_compared_with_the_steps_beside_each_repeat():
    def repeat(seconds, unpatched, ceiling):  # step 0 is dropped
        return {"step_seconds": [99.0, seconds, seconds], "beside": {"unpatched": unpatched, report.FREE_MERGE: ceiling}}

    # the second repeat ran in a slower phase, and so did the steps beside it
    first, second = repeat(6.0, [10.0, 10.0], [6.0, 6.0]), repeat(9.0, [14.0, 14.0], [9.0, 9.0])
    run = {"step_seconds": [99.0, 7.5, 7.5], "repeats": [first, second],
           "beside": {name: first["beside"][name] + second["beside"][name] for name in first["beside"]}}
    value, low, high = report.ceiling_shares(run)
    assert value == pytest.approx((12 - 7.5) / (12 - 7.5))
    assert (low, high) == (pytest.approx(1.0), pytest.approx(1.0))  # each repeat kept all of its own phase's saving
    assert report.share_range_words(run).startswith("range over 2 runs")
    single = report.ceiling_shares(first)
    assert single == (pytest.approx(1.0),) * 3 and report.share_range_words(first) == "range before/after the run"


@pytest.mark.parametrize("cached, beyond", [(7.9, False), (7.0, True)])
def test_the_phase_drift_is_called_larger_than_the_range_only_when_it_is(cached, beyond):
    # checkpoint steps 1 and 3, cached step 2; the ceiling's steps beside the run take 8 s
    run = {"step_seconds": [99.0, 8.5, cached, 8.5], "checkpoint_steps": [0, 1, 3], "matchings": 3,
           "beside": {"unpatched": [11.0, 13.5], report.FREE_MERGE: [8.0, 8.0]}}
    points, width = report.drift_points(run)
    assert (points > width) is beyond
    assert ("larger than that range" in report.ceiling_share_text(run)) is beyond
    assert (("more than" if beyond else "within") + " the range's") in report.ceiling_share_text(run, long=True)


# --- provenance labels, the tradeoff estimates ---

@pytest.mark.parametrize("metadata, label", [
    ({"commit": "abc1234", "command": "x"}, None),
    ({"commit": "abc1234", "command": "x", "dirty": False}, None),
    ({"commit": "abc1234+dirty", "command": "x"}, "measured from a tree with uncommitted changes"),
    ({"commit": "abc1234+dirty", "command": "x", "dirty": True, "changed_paths": ["a.py"]},
     "measured from a tree with uncommitted changes"),
    ({"commit": "", "command": "x", "dirty": None}, "measured outside a git checkout"),
    ({"commit": "abc1234", "command": "x", "provenance": {"label": "its commit is not in the history", "note": "n",
                                                          "rerun": "x"}}, "its commit is not in the history"),
])
def test_a_result_not_from_a_committed_tree_is_labelled(metadata, label):
    caveat = report.provenance_caveat(metadata)
    assert (caveat and caveat["label"]) == label
    assert (label in report.caveat_long(metadata) and label in report.caveat_short(metadata)) if label else \
        report.caveat_long(metadata) == report.caveat_short(metadata) == ""
    if metadata.get("changed_paths"):
        assert "a.py" in report.caveat_long(metadata)


def test_every_labelled_result_file_says_so_on_its_source_line():
    documents = report.DOCUMENTS[0].read_text()
    labelled = 0
    for path in sorted(report.RESULTS.glob("*.json")):
        if path.name.endswith("_quick.json"):
            continue
        result = report.load(path.name)
        for part in (result, result.get("fidelity_measured")):
            caveat = part and report.provenance_caveat(part)
            if caveat:
                labelled += 1
                assert f"{caveat['label']}**: {caveat['note']}" in documents, path.name
                assert f"`{caveat['rerun']}`" in documents, path.name
    assert labelled, "no result file is labelled any more: this test checks nothing (drop it)"


def test_a_tradeoff_point_past_the_last_timed_share_is_marked_extrapolated():
    result = _tradeoff_result(0.45, list(range(10)))  # timed shares 0.2 and 0.4
    point = common.tradeoff_points(result, "sd15")["ca_tome"][0]
    assert point["interpolated"] and point["extrapolated"]
    assert not common.tradeoff_points(_tradeoff_result(0.3, [0]), "sd15")["ca_tome"][0]["extrapolated"]


# --- the README's per-model table ---

def test_every_family_has_a_row_and_one_without_a_result_file_says_so(monkeypatch):
    from ca_tome.comfyui.families import FAMILIES

    rows = {line.split(" | ")[0].strip("| "): line for line in report.readme_models_table().splitlines()}
    assert {"SD1.x, SD2.x (UNet)", "SDXL (UNet)", *(family.name for family in FAMILIES)} <= set(rows)
    assert all(("not measured yet" in rows[family.name]) == (family.name not in report.DIT_MEASURED) for family in FAMILIES)
    monkeypatch.setattr(report, "DIT_MEASURED", {"Flux": report.DIT_MEASURED["Flux.1 and Flux 2"]})  # a family renamed
    with pytest.raises(SystemExit, match="readme-models"):
        report.readme_models_table()


def test_the_first_screen_names_every_dit_family_under_exactly_one_default():
    from ca_tome.comfyui.families import FAMILIES

    bullets = [line.split("**")[1] for line in report.readme_gains().splitlines() if "UNet" not in line]
    named = [name for bullet in bullets for name in bullet.split(", ")]
    assert sorted(named) == sorted(family.name for family in FAMILIES)
