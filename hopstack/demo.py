"""``hopstack demo``: compare the pipelines of demos/demo.yaml (or those given) on a benchmark and write
the comparison report.

Without options it uses the sample that ships with the package (a small fictional world written for
this project: 185 documents, 66 one- and two-hop questions with gold document ids and answers), indexed
in memory. Given a local copy of MultiHop-RAG (``--multihop-rag DIR`` or ``$HOPSTACK_MULTIHOP_RAG``) it
indexes that corpus once (under ``$HOPSTACK_HOME/indexes/multihop-rag``, rebuilt only when the corpus
changes) and compares the pipelines on its questions (all 2,255, or the first ``--limit``). Each run writes
its report into a new folder, ``runs/demo/<dataset>-<time>`` unless ``--out`` says where.
"""

from pathlib import Path

from hopstack.core.progress import Status
from hopstack.core.settings import hopstack_home, multihop_rag_home
from hopstack.errors import HopstackInputError
from hopstack.experiments.compare import CompareResult, compare
from hopstack.experiments.evaluation import corpus_mismatch
from hopstack.experiments.report import new_run_folder, write_report
from hopstack.experiments.variants import Grid, read_grid
from hopstack.graphs.node_cache import NodeCache
from hopstack.graphs.runner import Progress

SAMPLE_DIR = Path(__file__).parent / "data" / "sample"
SAMPLE_CORPUS = SAMPLE_DIR / "corpus.jsonl"
SAMPLE_QUESTIONS = SAMPLE_DIR / "questions.jsonl"


def default_demo_grid() -> Path:
    """The repository's demos/demo.yaml (beside the package in a source checkout or editable install)."""
    return Path(__file__).resolve().parent.parent / "demos" / "demo.yaml"


def demo_variants(pipelines: list[Path] | None) -> tuple[list[Path], Grid | None]:
    """The pipeline files and grid to compare: the files given, or the pipelines of demos/demo.yaml."""
    if pipelines:
        return pipelines, None
    grid_file = default_demo_grid()
    if not grid_file.is_file():
        raise HopstackInputError(f"{grid_file} not found (an installed wheel has no demos/); pass --pipeline files")
    return [], read_grid(grid_file)


def multihop_rag_index(folder: Path, index_dir: Path, status: Status, progress: Progress | None = None) -> Path:
    """An index of MultiHop-RAG's corpus at ``index_dir``: the one there when it was built from this
    corpus, else a new one (several minutes on a CPU: most of it embedding 6,443 chunks);
    ``progress(stage, done, total)`` hears how the build advances."""
    from hopstack.index.store import build_index, is_index

    corpus = folder / "corpus.json"
    if not corpus.is_file():
        raise HopstackInputError(f"{folder}: no corpus.json; point --multihop-rag at MultiHop-RAG's folder")
    if is_index(index_dir) and corpus_mismatch(index_dir, corpus) is None:
        return index_dir
    status(f"indexing {corpus} into {index_dir} (once; several minutes on a CPU)")
    build_index(corpus, index_dir, progress=progress)
    return index_dir


def run_demo(
    multihop_rag: Path | None = None,
    pipelines: list[Path] | None = None,
    limit: int | None = None,
    out_dir: Path | None = None,
    index_dir: Path | None = None,
    batch_size: int | None = None,
    status: Status | None = None,
    progress: Progress | None = None,
) -> tuple[CompareResult, dict[str, Path]]:
    """Compare the pipelines on MultiHop-RAG (when a local copy is given, as an argument or in
    ``$HOPSTACK_MULTIHOP_RAG``) or on the shipped sample; returns the result and the report's files (in
    ``out_dir``, else in a new folder under runs/demo)."""
    status = status or (lambda message: None)
    multihop_rag = multihop_rag or multihop_rag_home()
    home = hopstack_home()
    if multihop_rag is not None:
        index = multihop_rag_index(Path(multihop_rag), index_dir or home / "indexes" / "multihop-rag", status, progress)
        dataset = str(multihop_rag)
    else:
        index, dataset = SAMPLE_CORPUS, str(SAMPLE_DIR)
    files, grid = demo_variants(pipelines)
    status(f"loading {Path(dataset).name} and the pipelines")
    result = compare(
        files,
        dataset,
        index,
        grid=grid,
        limit=limit,
        batch_size=batch_size,
        node_cache=NodeCache(),
        status=status,
        progress=progress,
    )
    status("writing the report")
    return result, write_report(result, out_dir or new_run_folder(Path("runs") / "demo", result.dataset))
