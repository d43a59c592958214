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


def test_each_bench_file_gives_a_speed_row_per_precision_with_the_cpus_features(tmp_path: Path) -> None:
    import json

    from experiments.table import SPEED_RESULTS, headline_rows

    def measured(jax: float, torch: float) -> dict:
        summaries = {
            f: {"train_step_images_per_s": {"median": v, "n": 5}} for f, v in (("jax", jax), ("pytorch", torch))
        }
        return {"summaries": summaries, "ratios": {"train_throughput_ratio_jax_over_torch": jax / torch}}

    avx2, bf16 = SPEED_RESULTS
    (tmp_path / avx2).write_text(json.dumps({"machine": "cpu: A", "by_precision": {"float32": measured(220, 200)}}))
    by_precision = {"float32": measured(90, 100), "bfloat16": measured(50, 100)}
    (tmp_path / bf16).write_text(
        json.dumps({"machine": "cpu: B", "cpu_features": ["avx512f", "avx512_bf16"], "by_precision": by_precision})
    )
    speed = [row for row in headline_rows(tmp_path) if "train speed" in row]
    assert speed == [
        f"| JAX vs PyTorch, train speed (float32) | 220 vs 200 images/s (**1.10x**) | median of 5 repeats in one run, "
        f"cpu: A | `results/{avx2}` |",
        f"| JAX vs PyTorch, train speed (float32) | 90 vs 100 images/s (**0.90x**) | median of 5 repeats in one run, "
        f"cpu: B with avx512f, avx512_bf16 | `results/{bf16}` |",
        f"| JAX vs PyTorch, train speed (bfloat16) | 50 vs 100 images/s (**0.50x**) | median of 5 repeats in one run, "
        f"cpu: B with avx512f, avx512_bf16 | `results/{bf16}` |",
    ]


def test_every_committed_result_names_its_dataset_or_says_why_it_reads_none():
    import json

    unnamed = []
    for path in sorted((ROOT / "results").glob("*.json")):
        result = json.loads(path.read_text())
        if not (isinstance(result, dict) and (result.get("dataset_sha256") or result.get("data"))):
            unnamed.append(path.name)
    assert unnamed == [], "each results JSON records dataset_sha256, or says in 'data' why it reads no dataset"
