"""BENCHMARKS.md and README.md tables are the result files' numbers, not hand-copied ones."""

import pytest

from benchmarks import report


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
    text = "A sentence that goes on\n<!-- begin: bf16-ranking-speed -->x<!-- end: bf16-ranking-speed --> and ends.\n"
    with pytest.raises(SystemExit, match="starts a line"):
        report.render(text)
    assert "2." in report.render(text.replace("\n<!--", " <!--"))


def test_the_requirements_phrase_refuses_torch(tmp_path, monkeypatch):
    (tmp_path / "requirements.txt").write_text("# comment\nmatplotlib>=3.5  # the Stats node\n")
    monkeypatch.setattr(report, "ROOT", tmp_path)
    assert report.readme_requirements() == "`matplotlib>=3.5`"
    (tmp_path / "requirements.txt").write_text("matplotlib>=3.5\ntorch>=2.0\n")
    with pytest.raises(SystemExit, match="torch"):
        report.readme_requirements()
