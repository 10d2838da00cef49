"""BENCHMARKS.md and README.md tables are the result files' numbers, not hand-copied ones."""

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
