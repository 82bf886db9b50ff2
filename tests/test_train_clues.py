"""`hopstack train clues` end to end on a tiny randomly initialised BERT and a tiny MultiHop-RAG-format dataset:
the gold-sentence rule, the manifest, the model as CompSelect's clue scorer, and bad input refused before
anything is written."""

import hashlib
import io
import json
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest
import torch
from haystack import Document
from test_train_nli import CONTRADICTING, SUPPORTING, UNRELATED, _claims_folder
from test_training import _unchanged, _widgets, command_parses

from conftest import REPO, save_tiny_bert
from hopstack.components.compression import ClueExtractor, ClueReranker, sentence_clues
from hopstack.datasets.benchmark import load_dataset
from hopstack.errors import HopstackInputError
from hopstack.models.registry import trained_model_dir
from hopstack.training.clues import evidence, is_gold_sentence, overlaps, with_sentence_gold
from hopstack.training.reranker import is_held_out, partial_dir

BM25 = str(REPO / "yaml" / "bm25.yaml")
COLOURS = ["red", "blue", "green", "grey"]
QUESTIONS = 100  # MultiHop-RAG's train split is every fifth query: 20 here


def _sentences(name: str) -> tuple[str, list[str]]:
    """``name``'s answerable sentence and four that are not."""
    return f"The {name} is certified and approved by the registry.", [
        f"The {name} was painted {colour} in a shed." for colour in COLOURS
    ]


def _multihop_rag(folder):
    """Per query ``Is the widgetN approved?`` an article whose sentence saying so is the evidence fact (written
    with other case and spacing) among four sentences that do not say it."""
    folder.mkdir(parents=True)
    articles, queries = [], []
    for i in range(QUESTIONS):
        gold, others = _sentences(f"widget{i}")
        url, title = f"https://news.example/{i}", f"Widget report {i}"
        body = " ".join([*others[:2], gold, *others[2:]])
        articles.append({"title": title, "url": url, "source": "Example", "body": body})
        fact = {"fact": f"the Widget{i} is  certified and approved", "url": url, "title": title}
        queries.append({"query": f"Is the widget{i} approved?", "question_type": "inference", "evidence_list": [fact]})
    (folder / "MultiHopRAG.json").write_text(json.dumps(queries))
    (folder / "corpus.json").write_text(json.dumps(articles))
    return folder


def _arguments(data, base, out: str = "tiny-clues", *extra: str) -> list[str]:
    return [
        "train", "clues", "--dataset", str(data), "--index", str(data / "corpus.json"), "--out", out,
        "--base", base, "--negatives", BM25, "--depth", "3", "--num-negatives", "4", "--epochs", "10",
        "--batch-size", "4", "--learning-rate", "1e-3", "--max-length", "48", "--dev-share", "0.25",
        "--device", "cpu", *extra,
    ]  # fmt: skip


def _run_cli(*args: str) -> tuple[int, str, str]:
    """The hopstack command in process, as the ``cli`` fixture runs it (for a module-scoped fixture)."""
    from hopstack.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(out), redirect_stderr(err):
        patch.setattr(sys, "argv", ["hopstack", *args])
        patch.setenv("COLUMNS", "200")
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A clue scorer trained once for the module through the command: (manifest, stdout, data folder, base
    model, $HOPSTACK_HOME)."""
    root = tmp_path_factory.mktemp("clues")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model's steps are 10x slower when two threads share busy cores
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HOPSTACK_HOME", str(root / "home"))
            base = save_tiny_bert(root / "tiny-bert", "BertForSequenceClassification", num_labels=1)
            data = _multihop_rag(root / "widgets")
            code, out, err = _run_cli(*_arguments(data, base))
            assert code == 0, err
            manifest = json.loads((trained_model_dir("tiny-clues") / "manifest.json").read_text())
    finally:
        torch.set_num_threads(threads)
    return manifest, out, data, base, root / "home"


@pytest.fixture
def home(trained, monkeypatch):
    monkeypatch.setenv("HOPSTACK_HOME", str(trained[4]))
    return trained[4]


def test_a_sentence_is_gold_when_it_and_the_evidence_text_contain_one_another():
    fact = "Alpha  beta gamma delta. EPSILON zeta eta theta."
    assert overlaps("epsilon zeta eta theta.", fact)  # the fact contains the sentence (case, spaces aside)
    assert overlaps("So said: Alpha beta gamma delta. Epsilon zeta eta theta. Then more.", fact)  # and conversely
    assert not overlaps("Gamma delta. Epsilon zeta.", fact)  # a partial overlap is not enough
    assert not overlaps("", fact) and not overlaps("Alpha beta.", "")


def test_supporting_fact_sentences_are_gold_only_in_their_own_document(tmp_path):
    paragraphs = [["T1", ["Alpha beta gamma delta.", "Epsilon zeta eta theta."]], ["T2", ["Epsilon zeta eta theta."]]]
    record = {"_id": "h1", "question": "Who?", "answer": "Theta", "supporting_facts": [["T1", 1], ["T2", 7]]}
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps([{**record, "context": paragraphs}]))
    data = load_dataset(str(path))
    question = data.questions[0]
    assert question.extra["supporting_sentences"] == [["T1", "Epsilon zeta eta theta."]]  # index 7: not in T2
    gold = evidence(question, data.format)
    t1 = Document(id="T1#0", content="Alpha beta gamma delta.Epsilon zeta eta theta.", meta={"doc_id": "T1"})
    t2 = Document(id="T2#0", content="Epsilon zeta eta theta.", meta={"doc_id": "T2"})
    clues = sentence_clues([t1, t2])
    assert [c.content for c in clues] == ["Alpha beta gamma delta.", "Epsilon zeta eta theta."]  # a repeat once
    assert [is_gold_sentence(c, gold) for c in clues] == [False, True]
    assert not is_gold_sentence(sentence_clues([t2])[0], gold)  # the same words under another title
    assert with_sentence_gold(data) == [question]


def test_scifact_rationale_sentences_are_gold_only_in_their_own_abstract(tmp_path):
    folder = _claims_folder(tmp_path / "claims", count=4)
    data = load_dataset(str(folder), "train")
    questions = with_sentence_gold(data)
    assert [q.id for q in questions] == ["0", "1", "2", "3"]  # the test claims are never read
    supporting, contradicting = SUPPORTING.format(name="widget0"), CONTRADICTING.format(name="widget1")
    assert evidence(questions[0], data.format) == [("d0", supporting)]
    assert evidence(questions[1], data.format) == [("d1", contradicting)]  # CONTRADICT rationales are evidence too
    own = Document(
        id="d0#0", content=f"{supporting} {UNRELATED.format(name='widget0', colour='red')}", meta={"doc_id": "d0"}
    )
    other = Document(id="d9#0", content=supporting, meta={"doc_id": "d9"})
    gold = evidence(questions[0], data.format)
    assert [is_gold_sentence(c, gold) for c in sentence_clues([own])] == [True, False]
    assert not is_gold_sentence(sentence_clues([other])[0], gold)  # the same words in another abstract
    (folder / "claims_train.jsonl").unlink()
    with pytest.raises(HopstackInputError, match="no claims_\\*.jsonl files"):
        with_sentence_gold(data)


def test_the_manifest_says_how_the_clue_scorer_was_made(trained, home):
    manifest, out, data, base, _ = trained
    folder = trained_model_dir("tiny-clues")
    described = (manifest["role"], manifest["base_model"], manifest["dataset"], manifest["split"])
    assert described == ("clue scorer", base, "widgets", "train")
    pairs = (folder / "training_pairs.jsonl").read_bytes()
    assert manifest["training_pairs"]["sha256"] == hashlib.sha256(pairs).hexdigest()
    lines = [json.loads(line) for line in pairs.decode().splitlines()]
    train_ids = {f"q{i:04d}" for i in range(0, QUESTIONS, 5)}
    held_out = {q for q in train_ids if is_held_out(q, 0.25)}
    assert held_out and {p["id"] for p in lines} == train_ids - held_out
    for pair in lines:  # its own widget's sentence, found through the folded fact, and 4 hard negatives
        number = int(pair["id"][1:])
        gold, others = _sentences(f"widget{number}")
        assert (pair["passage"] == f"Widget report {number}. {gold}") == (pair["label"] == 1.0)
        assert pair["label"] == 1.0 or pair["passage"].removeprefix(f"Widget report {number}. ") in others
    assert manifest["training_pairs"]["pairs"] == len(lines) == 5 * len(train_ids - held_out)
    questions = {"training": len(train_ids - held_out), "held_out": len(held_out), "without_gold_sentence": 0}
    assert manifest["questions"] == questions and manifest["gold_sentences"]["sentences"] == len(train_ids)
    hyper = manifest["hyperparameters"]
    assert (hyper["depth"], hyper["max_length"], hyper["epochs"]) == (3, 48, 10)
    assert hyper["loss"] == "BinaryCrossEntropyLoss"
    assert manifest["negatives"]["pipeline"] == BM25 and manifest["negatives"]["rule"].startswith("non-gold sentences")
    (entry,) = manifest["datasets"]
    assert entry["name"] == "widgets" and len(entry["negatives_fingerprint"]) == 64
    assert entry["questions"] == questions and manifest["teacher"] is None
    dev = manifest["dev"]
    assert (dev["n_questions"], dev["gold_per_question"]) == (len(held_out), 1.0)
    assert dev["candidates_per_question"] > 5  # the sentences of the top 3 chunks
    assert set(dev["metrics"]) == {"clue_scorer", "minilm"}
    for metrics in dev["metrics"].values():
        assert set(metrics) == {"MRR@10", "Recall@5"} and all(0 <= value <= 1 for value in metrics.values())
    assert manifest["command"].startswith("hopstack train clues --dataset ") and "--depth 3" in manifest["command"]
    assert "trained tiny-clues: clue scorer on" in out and "held out" in out and "clue_scorer: MRR@10" in out
    assert not partial_dir("tiny-clues").exists() and not (folder / "checkpoints").exists()


def test_the_scorer_puts_a_planted_answerable_clue_first_in_compselect(trained, home, cli):
    scorer = {"type": "cross-encoder", "init_parameters": {"model": "tiny-clues", "max_length": 48}}
    planted, others = _sentences("gadget7")
    title = {"title": "Gadget report 7"}
    clues = [Document(id=f"c{i}", content=t, meta={**title, "clue_score": 1.0 - i / 10}) for i, t in enumerate(others)]
    answerable = Document(id="gold", content=planted, meta={**title, "clue_score": 0.0})
    reranker = ClueReranker(answerability=scorer, weight=1.0, device="cpu")
    ranked = reranker.run(query="Is the gadget7 approved?", documents=[*clues, answerable])["documents"]
    assert ranked[0].id == "gold" and ranked[0].meta["answerability"] == 1.0
    extractor = ClueExtractor(scorer=scorer, top_m=2, knn_threshold=0.0, device="cpu")
    document = Document(id="d", content=" ".join([*others[:2], planted, *others[2:]]), meta=title)
    extracted = extractor.run(query="Is the gadget7 approved?", documents=[document])["documents"]
    assert extracted[0].content == planted and extracted[0].id == "d:2"
    code, out, _ = cli("models", "list")
    assert code == 0 and "tiny-clues" in out and "clue scorer" in out


def test_bad_input_is_refused_before_anything_is_written(trained, home, cli, tmp_path):
    _, _, data, base, _ = trained
    err = _unchanged(home, lambda: cli(*_arguments(data, base)))
    assert "model 'tiny-clues' exists" in err and "--force" in err
    err = _unchanged(home, lambda: cli(*_arguments(data, base, "fresh", "--split", "test")))
    assert "reads only a train split" in err
    generic = _widgets(tmp_path / "generic", count=20)  # gold documents, no gold sentences
    arguments = _arguments(generic, base, "fresh")
    arguments[arguments.index("--index") + 1] = str(generic / "corpus.jsonl")
    err = _unchanged(home, lambda: cli(*arguments))
    assert "needs sentence-level gold" in err and "dataset 'generic' (generic format) has none" in err


def test_a_bi_encoder_clue_scorer_puts_a_planted_answerable_clue_first(trained, home, cli, tmp_path):
    _, _, data, _, _ = trained
    base = save_tiny_bert(tmp_path / "tiny-bert-encoder", "BertModel")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code, out, err = cli(*_arguments(data, base, "tiny-bi-clues", "--bi-encoder", "--float16"))
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    manifest = json.loads((trained_model_dir("tiny-bi-clues") / "manifest.json").read_text())
    assert (manifest["role"], manifest["cross_encoder"], manifest["bi_encoder"]) == (
        "clue scorer (bi-encoder)",
        False,
        True,
    )
    assert manifest["hyperparameters"]["loss"] == "MultipleNegativesRankingLoss"
    assert "--bi-encoder" in manifest["command"] and set(manifest["dev"]["metrics"]) == {"clue_scorer", "minilm"}
    planted, others = _sentences("gadget7")
    title = {"title": "Gadget report 7"}
    extractor = ClueExtractor(
        scorer={"type": "bi-encoder", "init_parameters": {"model": "tiny-bi-clues"}},
        top_m=2,
        knn_threshold=0.0,
        device="cpu",
    )
    document = Document(id="d", content=" ".join([*others[:2], planted, *others[2:]]), meta=title)
    extracted = extractor.run(query="Is the gadget7 approved?", documents=[document])["documents"]
    assert extracted[0].content == planted
    recorded = (trained_model_dir("tiny-bi-clues") / "manifest.json").read_bytes()
    assert extractor._scorer._model_id == f"tiny-bi-clues@{hashlib.sha256(recorded).hexdigest()}"  # cache key
    with pytest.raises(
        HopstackInputError, match="a clue scorer \\(bi-encoder\\)\\): score with \\{type: bi-encoder\\}"
    ):
        ClueReranker(answerability={"type": "cross-encoder", "init_parameters": {"model": "tiny-bi-clues"}}).warm_up()


def test_the_recorded_command_lines_parse(trained, home):
    for name in ("tiny-clues", "tiny-bi-clues"):  # the second when its test ran first
        path = trained_model_dir(name) / "manifest.json"
        if path.is_file():
            assert command_parses(json.loads(path.read_text())["command"], "clues")["name"] == name


def test_the_shipped_clue_scorer_ranks_the_answering_sentence_first(tmp_path, monkeypatch):
    from hopstack.models.registry import shipped_model_dir

    monkeypatch.setenv("HOPSTACK_HOME", str(tmp_path))
    manifest = json.loads((shipped_model_dir("hopstack-clues") / "manifest.json").read_text())
    assert manifest["role"] == "clue scorer (bi-encoder)"
    assert manifest["dataset"] == "multihop-rag+2wikimultihopqa+scifact"
    assert manifest["dev"]["metrics"]["clue_scorer"]["MRR@10"] > manifest["dev"]["metrics"]["minilm"]["MRR@10"]
    sentences = [
        "Penicillin is widely used to treat bacterial infections.",
        "The laboratory at St Mary's Hospital was small and cluttered.",
        "Alexander Fleming discovered penicillin in 1928.",
        "Many antibiotics were developed after the Second World War.",
    ]
    clues = [Document(id=f"c{i}", content=t, meta={"clue_score": 0.5}) for i, t in enumerate(sentences)]
    reranker = ClueReranker(answerability={"type": "bi-encoder", "init_parameters": {"model": "hopstack-clues"}})
    ranked = reranker.run(query="Who discovered penicillin?", documents=clues)["documents"]
    assert ranked[0].id == "c2" and ranked[0].meta["answerability"] == 1.0
