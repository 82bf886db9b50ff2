"""`hopstack train reranker` end to end on a tiny randomly initialised BERT and a tiny generic dataset: the
model folder and its manifest, loading it by name, and bad input refused before anything is written."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from haystack import Document

from conftest import REPO, save_tiny_bert
from hopstack.components.learned_ranking import LearnedReranker, RankingFeatures
from hopstack.components.rerankers import PointwiseReranker
from hopstack.components.retrieval import DenseRetriever
from hopstack.core.text import passage_text
from hopstack.datasets.base import BenchmarkQuestion, in_hash_train
from hopstack.errors import HopstackInputError
from hopstack.models.registry import resolve_model, trained_model_dir
from hopstack.models.scorers import BiEncoderScorer
from hopstack.training import reranker as training
from hopstack.training.reranker import (
    Ranked,
    RerankerTraining,
    TrainingSet,
    check_request,
    command_line,
    make_pairs,
    partial_dir,
    rankable_scores,
    teacher_spec,
    train_reranker,
)

BM25 = str(REPO / "yaml" / "bm25.yaml")


def _write_dataset(folder, questions: list[dict], corpus: list[dict]):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    return folder


def _widgets(folder, count: int = 60, gold: bool = True):
    """Per question ``Is the widgetN approved?`` one gold passage saying it is approved and four that do not."""
    corpus, questions = [], []
    for i in range(count):
        name = f"widget{i}"
        corpus.append({"id": f"g{i}", "title": name, "text": f"The {name} is certified and approved by the registry."})
        for j, colour in enumerate(["red", "blue", "green", "grey"]):
            corpus.append({"id": f"n{i}-{j}", "title": name, "text": f"The {name} was painted {colour} in a shed."})
        gold_ids = [f"g{i}"] if gold else []
        questions.append({"id": f"q{i}", "question": f"Is the {name} approved?", "answers": [], "gold_ids": gold_ids})
    return _write_dataset(folder, questions, corpus)


def _config(data, **changes) -> RerankerTraining:
    settings = {
        "dataset": str(data), "index": str(data / "corpus.jsonl"), "out": "tiny-reranker", "base": "",
        "negatives": BM25, "depth": 5, "num_negatives": 4, "epochs": 6, "batch_size": 8, "learning_rate": 1e-3,
        "max_length": 48, "dev_share": 0.25, "device": "cpu",
    }  # fmt: skip
    return RerankerTraining(**{**settings, **changes})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained once for the module: (its manifest, the dataset folder, the training config)."""
    root = tmp_path_factory.mktemp("training")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOPSTACK_HOME", str(root / "home"))
        base = save_tiny_bert(root / "tiny-bert", "BertForSequenceClassification", num_labels=1)
        data = _widgets(root / "widgets")
        config = _config(data, base=base)
        steps = []
        manifest = train_reranker(config, report=lambda step, total, loss: steps.append((step, total)))
        yield manifest, data, config, steps, root / "home"


@pytest.fixture
def home(trained, monkeypatch):
    monkeypatch.setenv("HOPSTACK_HOME", str(trained[4]))
    return trained[4]


def test_the_manifest_says_how_the_model_was_made(trained, home):
    manifest, data, config, steps, _ = trained
    folder = trained_model_dir("tiny-reranker")
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    assert (manifest["role"], manifest["base_model"], manifest["dataset"], manifest["split"]) == (
        "learned reranker with a cross-encoder",
        config.base,
        "widgets",
        "train",
    )
    pairs = (folder / "training_pairs.jsonl").read_bytes()
    assert manifest["training_pairs"]["sha256"] == hashlib.sha256(pairs).hexdigest()
    lines = [json.loads(line) for line in pairs.decode().splitlines()]
    train_ids = {f"q{i}" for i in range(60) if in_hash_train(f"q{i}")}
    assert {p["id"] for p in lines} < train_ids  # train questions only, less the held-out ones
    assert manifest["training_pairs"]["pairs"] == len(lines) == 5 * manifest["training_pairs"]["questions"]
    assert manifest["training_pairs"]["positives"] == sum(p["label"] for p in lines) == len({p["id"] for p in lines})
    assert manifest["negatives"] == {"pipeline": BM25} and manifest["teacher"] is None
    (entry,) = manifest["datasets"]
    assert (entry["name"], entry["index"], len(entry["negatives_fingerprint"])) == ("widgets", config.index[0], 64)
    assert entry["questions"] == manifest["questions"]
    hyper = manifest["hyperparameters"]
    assert (hyper["epochs"], hyper["max_length"], hyper["batch_size"]) == (6, 48, 8)
    assert hyper["loss"] == "BinaryCrossEntropyLoss"
    assert manifest["seconds"] > 0 and manifest["pairs_per_second"] > 0
    dev = manifest["dev"]
    assert dev["n_questions"] == len(train_ids) - manifest["training_pairs"]["questions"] > 0
    assert set(dev["by_weight"]) == {str(w / 10) for w in range(11)}
    assert set(dev["metrics"]) == {"first_stage", "reranker", "interpolated", "learned"}
    assert manifest["ranker"]["features"]["with_scorer"] is True and (folder / manifest["ranker"]["file"]).is_file()
    assert manifest["first_stage_weight"] == dev["first_stage_weight"]
    assert steps[-1][0] == steps[-1][1] == 6 * -(-len(lines) // 8)  # every step reported
    assert not partial_dir("tiny-reranker").exists() and not (folder / "checkpoints").exists()
    parsed = command_parses(manifest["command"], "reranker")
    assert parsed["name"] == "tiny-reranker" and parsed["dataset"] == list(config.dataset)


def test_the_model_loads_by_name_and_ranks_a_planted_positive_first(trained, home, cli):
    assert resolve_model("tiny-reranker") == str(trained_model_dir("tiny-reranker"))
    scorer = {"type": "cross-encoder", "init_parameters": {"model": "tiny-reranker", "max_length": 48}}
    reranker = PointwiseReranker(scorer, top_k=5, device="cpu")
    texts = [f"The gadget7 was painted {colour} in a shed." for colour in ["red", "teal", "grey", "blue"]]
    candidates = [Document(id=f"n{i}", content=t, score=5.0 - i) for i, t in enumerate(texts)]
    planted = Document(id="gold", content="The gadget7 is certified and approved by the registry.", score=0.0)
    ranked = reranker.run(query="Is the gadget7 approved?", documents=[*candidates, planted])["documents"]
    assert ranked[0].id == "gold"
    manifest = (trained_model_dir("tiny-reranker") / "manifest.json").read_bytes()
    assert reranker._scorer._identity["version"] == hashlib.sha256(manifest).hexdigest()  # the call cache's key
    code, out, _ = cli("models", "list")
    assert code == 0 and "tiny-reranker" in out and "learned reranker with a cross-encoder" in out


def test_the_learned_ranker_reads_the_cross_encoder_of_its_model(trained, home):
    reranker = LearnedReranker("tiny-reranker", top_k=2, device="cpu")
    documents = [Document(id=str(i), content=f"The widget{i} was painted red.", score=float(i)) for i in range(4)]
    ranked = reranker.run(query="Is the widget2 approved?", documents=documents)["documents"]
    assert len(ranked) == 2 and reranker._scorer is not None and reranker._scorer.max_length == 48


def test_first_stage_weight_one_keeps_the_first_stage_order(trained, home):
    scorer = {"type": "cross-encoder", "init_parameters": {"model": "tiny-reranker", "max_length": 48}}
    reranker = PointwiseReranker(scorer, top_k=3, device="cpu", first_stage_weight=1.0)
    documents = [Document(id=str(i), content=f"passage {i} approved", score=float(i)) for i in range(4)]
    assert [d.id for d in reranker.run(query="q", documents=documents)["documents"]] == ["3", "2", "1"]
    with pytest.raises(ValueError, match="first_stage_weight must be between 0 and 1"):
        PointwiseReranker(scorer, first_stage_weight=1.5)


def command_parses(command: str, subcommand: str) -> dict:
    """The options of a manifest's ``hopstack train SUBCOMMAND`` line as the CLI parses them (not run)."""
    import shlex

    import typer

    from hopstack.cli import app

    words = shlex.split(command)
    assert words[:3] == ["hopstack", "train", subcommand]
    train = typer.main.get_command(app).commands["train"]
    return train.commands[subcommand].make_context(subcommand, words[3:]).params


def _unchanged(home, action) -> str:
    """Run ``action`` (a refused training) and check it changed no file under ``home``; returns its stderr."""
    before = {p: p.read_bytes() for p in home.rglob("*") if p.is_file()}
    code, _, err = action()
    assert code == 2, err
    assert {p: p.read_bytes() for p in home.rglob("*") if p.is_file()} == before
    return err


def _train_cli(cli, config: RerankerTraining, *extra: str):
    args = [
        "train", "reranker", "--dataset", *config.dataset, "--index", *config.index, "--out", config.out,
        "--base", config.base, "--negatives", config.negatives, "--depth", "5", "--epochs", "1", "--device", "cpu",
        "--max-length", "48", *extra,
    ]  # fmt: skip
    return lambda: cli(*args)


def test_bad_input_is_refused_before_anything_is_written(trained, home, cli, tmp_path):
    _, data, config, _, _ = trained
    err = _unchanged(home, _train_cli(cli, config))
    assert "model 'tiny-reranker' exists" in err and "--force" in err
    fresh = RerankerTraining(**{**config.__dict__, "out": "fresh"})
    err = _unchanged(home, _train_cli(cli, fresh, "--split", "test"))
    assert "reads only a train split" in err
    err = _unchanged(home, _train_cli(cli, RerankerTraining(**{**fresh.__dict__, "base": str(tmp_path / "none")})))
    assert "--base" in err and "cannot load it as a cross-encoder" in err
    unlabelled = _widgets(tmp_path / "unlabelled", count=20, gold=False)
    err = _unchanged(home, _train_cli(cli, _config(unlabelled, base=config.base, out="fresh")))
    assert "no question of the train split has gold_ids" in err
    ids = ["q01", "q02", "q03", "q04"]  # all in the test split (tests/test_splits.py pins it)
    assert not any(map(in_hash_train, ids))
    corpus = [{"id": "d", "title": "", "text": "a passage"}]
    empty = _write_dataset(tmp_path / "empty", [{"id": i, "question": "?", "gold_ids": ["d"]} for i in ids], corpus)
    err = _unchanged(home, _train_cli(cli, _config(empty, base=config.base, out="fresh")))
    assert "the train split has no questions" in err
    err = _unchanged(home, _train_cli(cli, fresh, "--resume"))
    assert "no interrupted training of 'fresh'" in err
    err = _unchanged(home, _train_cli(cli, fresh, "--layers", "9"))
    assert "--layers 9: the base model" in err and "has 2 layers" in err
    err = _unchanged(home, _train_cli(cli, fresh, "--num-negatives", "1,2"))
    assert "--num-negatives 1,2: give one count of at least 1, or one per --dataset" in err
    err = _unchanged(home, _train_cli(cli, fresh, "--num-negatives", "0"))
    assert "--num-negatives 0: give one count of at least 1" in err
    err = _unchanged(home, _train_cli(cli, fresh, "--num-negatives", "two"))
    assert "expected a whole number or comma-separated ones" in err
    for bad in ("0.9", "most"):
        err = _unchanged(home, _train_cli(cli, fresh, "--domain-quantile", bad))
        assert f"--domain-quantile must be in [0, 0.5] or auto, got {bad!r}" in err
    with pytest.raises(HopstackInputError, match="--domain-quantile must be in"):
        train_reranker(RerankerTraining(**{**fresh.__dict__, "domain_quantile": -0.1}))


def test_auto_domain_quantile_takes_the_largest_that_costs_the_held_out_questions_nothing():
    gold = [[True, False]] * 4
    learned = [np.array([1.0, 0.0])] * 4  # the ranker puts every gold candidate first
    alone = [np.array([1.0, 0.0])] * 2 + [np.array([0.0, 1.0])] * 2  # the fallback, only on the first two
    trusts = {  # quantile -> which questions the check trusts
        0.01: [True, True, True, True],
        0.02: [False, True, True, True],
        0.05: [False, False, True, True],
        0.1: [False, False, False, True],
    }
    familiar_at = {q: np.array(mask) for q, mask in trusts.items()}
    chosen, by_quantile = training.choose_domain_quantile(gold, learned, alone, familiar_at)
    assert chosen == 0.05 and by_quantile["0.1"] == {"MRR@10": 0.875, "Hits@4": 1.0, "unfamiliar": 3}
    assert [by_quantile[str(q)]["unfamiliar"] for q in trusts] == [0, 1, 2, 3]
    hurt = {q: np.array([False, False, False, mask[3]]) for q, mask in trusts.items()}  # every quantile costs
    assert training.choose_domain_quantile(gold, learned, alone, hurt)[0] == 0.01
    assert training.choose_domain_quantile([], [], [], {q: np.array([], dtype=bool) for q in trusts}) == (0.01, {})


def test_an_unusable_name_is_refused():
    for name, message in [
        ("../up", "a model name is"),
        ("minilm", "registry or shipped model's name"),
        ("mhr-ranker", "shipped model"),
    ]:
        with pytest.raises(HopstackInputError, match=message):
            check_request(RerankerTraining(dataset="d", index="i", out=name), resume=False, force=False)


def test_several_datasets_train_one_model_each_on_its_own_index(home, tmp_path):
    first, second = _widgets(tmp_path / "widgets", count=40), _widgets(tmp_path / "gadgets", count=20)
    config = RerankerTraining(
        dataset=(str(first), str(second)), index=(str(first / "corpus.jsonl"), str(second / "corpus.jsonl")),
        out="two-sets", negatives=BM25, depth=5, dev_share=0.25, device="cpu", cross_encoder=False,
    )  # fmt: skip
    manifest = train_reranker(config)
    assert manifest["dataset"] == "widgets+gadgets"
    widgets, gadgets = manifest["datasets"]
    assert (widgets["name"], gadgets["name"]) == ("widgets", "gadgets")
    assert gadgets["index"] == str(second / "corpus.jsonl")
    for entry, count in [(widgets, 40), (gadgets, 20)]:
        train_count = sum(in_hash_train(f"q{i}") for i in range(count))
        assert entry["questions"]["training"] + entry["questions"]["held_out"] == train_count
    assert manifest["questions"]["training"] == widgets["questions"]["training"] + gadgets["questions"]["training"]
    command = manifest["command"]
    assert f"--dataset {first} --dataset {second} --index {first}/corpus.jsonl --index {second}/corpus.jsonl" in command


def _ranked(dataset: str, count: int, gold: list[bool]) -> list[Ranked]:
    """``count`` questions of ``dataset`` whose candidates are gold as ``gold`` says."""
    documents = [Document(id=f"{dataset}-{k}", content=f"passage {k} of {dataset}") for k in range(len(gold))]
    return [
        Ranked(BenchmarkQuestion(f"{dataset}-q{i}", f"question {i}?", [], [], []), documents, gold, dataset)
        for i in range(count)
    ]


def test_each_dataset_gives_its_own_count_of_hard_negatives():
    config = RerankerTraining(dataset=("a", "b"), index=("i", "j"), out="x", num_negatives=(1, 3), dev_share=0.0)
    gold = [True, False, False, False, False]
    sets = [TrainingSet(None, "i", "", _ranked("a", 2, gold)), TrainingSet(None, "j", "", _ranked("b", 2, gold))]
    pairs = make_pairs(sets, config)
    negatives = {name: sum(p["dataset"] == name and p["label"] == 0.0 for p in pairs) for name in ("a", "b")}
    assert negatives == {"a": 2 * 1, "b": 2 * 3}
    assert all(p["label"] == 1.0 for p in pairs if p["passage"].startswith("passage 0"))
    command = command_line("reranker", config)
    assert "--num-negatives 1,3" in command
    assert command_parses(command, "reranker")["num_negatives"] == "1,3"
    same = RerankerTraining(dataset=("a", "b"), index=("i", "j"), out="x", num_negatives=(2,), dev_share=0.0)
    assert same.num_negatives == 2 and same.negatives_per_dataset() == (2, 2)
    assert make_pairs(sets, same) == make_pairs(sets, RerankerTraining(**{**same.__dict__, "num_negatives": (2, 2)}))


def test_only_questions_whose_order_can_matter_are_scored(monkeypatch):
    scored = []

    def fake_scores(model, items, config, progress=None, embeddings=None):
        scored.extend(r.question.id for r in items)
        return [np.arange(len(r.documents), dtype=float) for r in items]

    monkeypatch.setattr(training, "trained_scores", fake_scores)
    mixed, none, every = _ranked("m", 1, [False, True]), _ranked("n", 1, [False, False]), _ranked("e", 1, [True, True])
    scores = rankable_scores(None, mixed + none + every, RerankerTraining(dataset="d", index="i", out="x"))
    assert scored == ["m-q0"]
    assert [s.tolist() for s in scores] == [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]


def test_datasets_and_indexes_must_pair_up(home):
    for dataset, index, message in [
        (("a", "b"), ("i",), "give one --index per --dataset"),
        (("a", "a"), ("i", "j"), "names a dataset twice"),
    ]:
        with pytest.raises(HopstackInputError, match=message):
            check_request(RerankerTraining(dataset=dataset, index=index, out="x"), resume=False, force=False)


def test_a_teacher_is_a_model_name_or_a_scorer_spec(home):
    assert teacher_spec("mhr-reranker") == {"type": "cross-encoder", "init_parameters": {"model": "mhr-reranker"}}
    spec = "{type: llm, init_parameters: {llm: qwen2.5-0.5b}}"
    assert teacher_spec(spec) == {"type": "llm", "init_parameters": {"llm": "qwen2.5-0.5b"}}
    for bad, message in [("{type: [", "not a model name nor a YAML scorer spec"), ("[1, 2]", "give a model name")]:
        with pytest.raises(HopstackInputError, match=message):
            teacher_spec(bad)
    with pytest.raises(ValueError, match="no-such-scorer"):
        bad_teacher = RerankerTraining(dataset="d", index="i", out="x", teacher="{type: no-such-scorer}")
        check_request(bad_teacher, resume=False, force=False)
    with pytest.raises(HopstackInputError, match="needs --cross-encoder"):
        train_reranker(RerankerTraining(dataset="d", index="i", out="x", teacher="minilm", cross_encoder=False))


def test_a_student_distilled_from_a_teacher_ranks_the_planted_positive_first(trained, home, tmp_path):
    _, data, config, _, _ = trained
    changes = {"out": "student", "teacher": "tiny-reranker", "layers": 1, "float16": True, "epochs": 12}
    manifest = train_reranker(RerankerTraining(**{**config.__dict__, **changes}))
    saved = json.loads((trained_model_dir("student") / "config.json").read_text())
    assert (saved["num_hidden_layers"], saved["dtype"]) == (1, "float16")  # the tiny base has 2 layers
    assert "--layers 1" in manifest["command"] and "--float16" in manifest["command"]
    assert manifest["hyperparameters"]["loss"] == "MarginMSELoss"
    assert manifest["teacher"] == {"type": "cross-encoder", "init_parameters": {"model": "tiny-reranker"}}
    assert manifest["training_pairs"]["teacher_scored"] is True
    assert "--teacher tiny-reranker" in manifest["command"]
    lines = (trained_model_dir("student") / "training_pairs.jsonl").read_text().splitlines()
    teacher = [json.loads(line)["teacher"] for line in lines]
    assert len(set(teacher)) > 1  # the teacher's own scores, not the labels
    scorer = {"type": "cross-encoder", "init_parameters": {"model": "student", "max_length": 48}}
    reranker = PointwiseReranker(scorer, top_k=5, device="cpu")
    texts = [f"The gadget3 was painted {colour} in a shed." for colour in ["red", "teal", "grey", "blue"]]
    candidates = [Document(id=f"n{i}", content=t, score=5.0 - i) for i, t in enumerate(texts)]
    planted = Document(id="gold", content="The gadget3 is certified and approved by the registry.", score=0.0)
    assert reranker.run(query="Is the gadget3 approved?", documents=[*candidates, planted])["documents"][0].id == "gold"


def test_a_bi_encoder_ranker_scores_by_cosine_and_ranks_the_planted_positive_first(trained, home, tmp_path):
    _, data, config, _, _ = trained
    base = save_tiny_bert(tmp_path / "tiny-bert-encoder", "BertModel")
    changes = {"out": "tiny-bi-ranker", "base": base, "bi_encoder": True, "float16": True, "epochs": 10}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's training is then the same on every machine
    try:
        manifest = train_reranker(RerankerTraining(**{**config.__dict__, **changes}))
    finally:
        torch.set_num_threads(threads)
    assert (manifest["role"], manifest["cross_encoder"], manifest["bi_encoder"]) == (
        "learned reranker with a bi-encoder",
        False,
        True,
    )
    assert manifest["hyperparameters"]["loss"] == "MultipleNegativesRankingLoss"
    assert "--bi-encoder" in manifest["command"] and command_parses(manifest["command"], "reranker")["bi_encoder"]
    assert manifest["ranker"]["features"]["with_scorer"] is True
    texts = [f"The gadget5 was painted {colour} in a shed." for colour in ["red", "teal", "grey", "blue"]]
    planted = "The gadget5 is certified and approved by the registry."
    cosine = BiEncoderScorer("tiny-bi-ranker", device="cpu", cache=False)
    scores = cosine.score([("Is the gadget5 approved?", t) for t in [*texts, planted]])
    assert scores.argmax() == len(texts)  # the fine-tuned cosine alone puts the approved passage first
    reranker = LearnedReranker("tiny-bi-ranker", top_k=5, device="cpu")
    candidates = [Document(id=f"n{i}", content=t, score=5.0 - i) for i, t in enumerate(texts)]
    documents = [*candidates, Document(id="gold", content=planted, score=0.0)]
    reranker.run(query="Is the gadget5 approved?", documents=documents)
    assert isinstance(reranker._scorer, BiEncoderScorer)  # the ranker reads the bi-encoder's cosine
    _the_domain_check_routes_unfamiliar_questions_to_the_fallback(manifest, documents, tmp_path)
    corpus = tmp_path / "gadgets.jsonl"  # the model is also a dense retriever's encoder, by the same name
    lines = [{"id": f"n{i}", "text": t} for i, t in enumerate(texts)] + [{"id": "gold", "text": planted}]
    corpus.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    dense = DenseRetriever(index=str(corpus), model="tiny-bi-ranker", top_k=5, device="cpu")
    dense.warm_up()
    assert dense.run(query="Is the gadget5 approved?")["documents"][0].meta["doc_id"] == "gold"
    with pytest.raises(HopstackInputError, match="--bi-encoder fine-tunes the ranker's scorer model"):
        train_reranker(RerankerTraining(dataset="d", index="i", out="x", bi_encoder=True, cross_encoder=False))


def _the_domain_check_routes_unfamiliar_questions_to_the_fallback(manifest: dict, documents, tmp_path):
    """A bi-encoder ranker's manifest carries its domain check and fallback ranker; a question the check
    does not trust is ranked by the features-only fallback, the others by the ranker over the cosine."""
    import lightgbm

    domain = manifest["ranker"]["domain"]
    assert domain["datasets"] == ["widgets"] and len(domain["centroids"]) == len(domain["thresholds"]) == 1
    plain = RankingFeatures.from_dict(domain["fallback_features"])
    assert not plain.with_scorer and plain.chunk_position_limit == 0
    dev = manifest["dev"]
    assert {"features_only", "learned_without_domain_check", "learned"} <= set(dev["metrics"])
    # --domain-quantile auto: the largest quantile whose held-out MRR@10 is the ranker's without the check
    choice = domain["quantile_choice"]
    assert choice["rule"] == "auto" and set(choice["held_out"]) == set(map(str, training.DOMAIN_QUANTILES))
    unchecked = dev["metrics"]["learned_without_domain_check"]["MRR@10"]
    passing = [q for q in training.DOMAIN_QUANTILES if choice["held_out"][str(q)]["MRR@10"] >= unchecked - 1e-12]
    assert domain["quantile"] == max(passing, default=training.DOMAIN_QUANTILES[0])
    assert dev["unfamiliar"] == choice["held_out"][str(domain["quantile"])]["unfamiliar"]
    assert dev["metrics"]["learned"]["MRR@10"] == choice["held_out"][str(domain["quantile"])]["MRR@10"]
    folder = trained_model_dir("tiny-bi-ranker")
    fallback = lightgbm.Booster(model_file=str(folder / domain["fallback_file"]))
    main = lightgbm.Booster(model_file=str(folder / manifest["ranker"]["file"]))
    features = RankingFeatures.from_dict(manifest["ranker"]["features"])
    query = "Is the gadget5 approved?"
    pairs = [(query, passage_text(d, True)) for d in documents]
    cosines = BiEncoderScorer(str(folder), device="cpu", cache=False).score(pairs)
    expected = {
        "unfamiliar": fallback.predict(training.fallback_features(features).compute(query, documents)),
        "familiar": main.predict(features.compute(query, documents, cosines)),
    }
    assert not np.allclose(expected["unfamiliar"], expected["familiar"])
    for case, threshold in (("unfamiliar", 1.5), ("familiar", -1.5)):
        copy = tmp_path / f"tiny-bi-{case}"
        shutil.copytree(folder, copy)
        edited = {**manifest, "ranker": {**manifest["ranker"], "domain": {**domain, "thresholds": [threshold]}}}
        (copy / "manifest.json").write_text(json.dumps(edited))
        reranker = LearnedReranker(str(copy), top_k=5, device="cpu")
        ranked = reranker.run(query=query, documents=documents)["documents"]
        order = [documents[i].id for i in np.argsort(-expected[case], kind="stable")]
        assert [d.id for d in ranked] == order
        assert reranker.scorer_trusted([query, query], [documents, []]).tolist() == [case == "familiar", True]
    unchecked = LearnedReranker(str(tmp_path / "tiny-bi-unfamiliar"), top_k=5, device="cpu", domain_check=False)
    order = [documents[i].id for i in np.argsort(-expected["familiar"], kind="stable")]
    assert [d.id for d in unchecked.run(query=query, documents=documents)["documents"]] == order
    assert unchecked.scorer_trusted([query], [documents]).tolist() == [True]
