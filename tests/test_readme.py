"""The README stays a short user's guide whose numbers are generated from results/*.json."""

import re
from pathlib import Path

from experiments.table import (
    PIPELINE_BEGIN,
    PIPELINE_DOC,
    PIPELINE_END,
    README_BEGIN,
    README_END,
    pipeline_block,
    readme_block,
)

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_the_results_block_is_generated_from_the_committed_results():
    text = README.read_text()
    block = text[text.index(README_BEGIN) : text.index(README_END) + len(README_END)]
    assert block == readme_block(ROOT / "results"), (
        "README.md's results block is stale: run `python -m experiments.table --readme README.md`"
    )


def test_the_detector_tables_of_the_predict_page_are_generated_too():
    text = (ROOT / PIPELINE_DOC).read_text()
    block = text[text.index(PIPELINE_BEGIN) : text.index(PIPELINE_END) + len(PIPELINE_END)]
    assert block == pipeline_block(ROOT / "results"), (
        f"{PIPELINE_DOC}'s pipeline block is stale: run `python -m experiments.table --readme README.md`"
    )


def test_the_readme_is_short_and_its_links_resolve():
    text = README.read_text()
    assert len(text) <= 15_000  # a front page: prose depth goes to docs/
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert links and all((ROOT / link).exists() for link in links if "://" not in link), links
