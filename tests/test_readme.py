"""The README stays a short user's guide whose numbers are generated from results/*.json."""

import re
from pathlib import Path

from experiments.table import DOC_BLOCKS, README_BEGIN, README_END, readme_block

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_the_results_block_is_generated_from_the_committed_results():
    text = README.read_text()
    block = text[text.index(README_BEGIN) : text.index(README_END) + len(README_END)]
    assert block == readme_block(ROOT / "results"), (
        "README.md's results block is stale: run `python -m experiments.table --readme README.md`"
    )


def test_the_generated_blocks_of_the_docs_pages_are_current():
    for doc, begin, end, build in DOC_BLOCKS:
        text = (ROOT / doc).read_text()
        block = text[text.index(begin) : text.index(end) + len(end)]
        assert block == build(ROOT / "results"), (
            f"{doc}'s generated block is stale: run `python -m experiments.table --readme README.md`"
        )


def test_the_readme_is_short_and_its_links_resolve():
    text = README.read_text()
    assert len(text) <= 12_000  # a front page: tables and prose depth go to docs/
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert links and all((ROOT / link).exists() for link in links if "://" not in link), links


def test_the_results_page_links_resolve():
    page = ROOT / "docs" / "results.md"
    links = re.findall(r"\]\(([^)#]+)\)", page.read_text())
    assert links and all((page.parent / link).exists() for link in links if "://" not in link), links
