"""The learned reranker: its features, `hopstack train reranker --no-cross-encoder` end to end on a tiny dataset
where only the chunks' metadata tells gold from not, and loading the ranker by name in a pipeline."""

import json

import numpy as np
import pytest
from haystack import Document

from conftest import REPO
from hopstack.components.learned_ranking import DomainCheck, LearnedReranker, RankingFeatures, candidate_profile
from hopstack.errors import HopstackInputError
from hopstack.models.registry import trained_model_dir
from hopstack.models.scorers import BiEncoderScorer

SOURCES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli"]


def _document(i: int, score: float | None, **meta) -> Document:
    return Document(id=f"d{i}", content=f"passage {i}", score=score, meta=meta)


def test_named_fields_dates_and_times_are_matched_in_the_question():
    features = RankingFeatures(("source", "published_at"))
    documents = [
        _document(0, 3.0, source="TechCrunch", published_at="2023-10-07T14:00:29+00:00", doc_id="a"),
        _document(1, 2.0, source="The Verge", published_at="2023-11-01T13:41:30+00:00", doc_id="a"),
        _document(2, 1.0, source="TechCrunch", published_at="2023-12-24T09:00:00+00:00", doc_id="b"),
        _document(3, None, source="Wired", doc_id="c"),
    ]
    query = "After the  techcrunch report on October 7, 2023, what did the Verge say at 13:41:30?"
    matrix = features.compute(query, documents)
    column = dict(zip(features.names(), matrix.T))
    assert column["source_named"].tolist() == [1, 1, 1, 0]
    assert column["source_earlier_same"].tolist() == [0, 0, 1, 0]
    assert column["source_values_named"].tolist() == [2] * 4
    assert column["published_at_named"].tolist() == [1, 1, 0, 0]  # the date of one, the time of the other
    assert column["same_document_earlier"].tolist() == [0, 1, 0, 0]
    assert column["first_stage_rank"].tolist() == [0, 1, 2, 3]
    assert column["first_stage_score"].tolist() == [3.0, 2.0, 1.0, 1.0]  # no score: the list's lowest
    assert column["first_stage_gap"].tolist() == [0.0, -1.0, -2.0, -2.0]


def test_scorer_features_need_one_score_per_candidate():
    features = RankingFeatures(("source",), with_scorer=True)
    documents = [_document(i, float(i)) for i in range(3)]
    matrix = features.compute("q", documents, np.array([0.5, 2.0, 1.0]))
    column = dict(zip(features.names(), matrix.T))
    assert column["scorer_rank"].tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="one scorer score per candidate"):
        features.compute("q", documents, np.array([1.0]))
    assert features.compute("q", [], np.zeros(0)).shape == (0, len(features.names()))
    with pytest.raises(ValueError, match="not the ones this hopstack computes"):
        RankingFeatures.from_dict({**features.to_dict(), "names": ["first_stage_score"]})


def test_candidates_without_a_field_share_nothing_except_in_version_1_models():
    documents = [_document(i, 3.0 - i) for i in range(3)]  # no source
    for version, expected in ((2, [0, 0, 0]), (1, [0, 1, 2])):
        features = RankingFeatures(("source",), version=version)
        column = dict(zip(features.names(), features.compute("q", documents).T))
        assert column["source_earlier_same"].tolist() == expected
    written = RankingFeatures(("source",)).to_dict()
    assert written["version"] == 2 and RankingFeatures.from_dict(written).version == 2
    older = {key: value for key, value in written.items() if key != "version"}
    assert RankingFeatures.from_dict(older).version == 1  # manifests from before the version: as trained
    with pytest.raises(ValueError, match="features version 3"):
        RankingFeatures.from_dict({**written, "version": 3})


def test_monotone_constraints_keep_a_ranker_from_turning_the_first_stage_upside_down():
    """Training data where the first stage's worst candidate is always the gold one: an unconstrained ranker
    learns to put it first; a monotone one may not use the first stage against a candidate."""
    from hopstack.datasets.base import BenchmarkQuestion
    from hopstack.training.reranker import Ranked, fit_lambdarank, lambdarank_parameters

    features = RankingFeatures(("source",))
    assert dict(zip(features.names(), features.monotone_directions())) == {
        "first_stage_score": 1, "first_stage_gap": 1, "first_stage_z": 1, "first_stage_rank": -1,
        "chunk_position": 0, "same_document_earlier": -1,
        "source_named": 1, "source_earlier_same": -1, "source_values_named": 0,
    }  # fmt: skip
    items = []
    for i in range(60):
        documents = [_document(j, 10.0 - j + 0.01 * i) for j in range(6)]
        question = BenchmarkQuestion(f"q{i}", f"question {i}", [], ["d5"], [])
        items.append(Ranked(question, documents, [j == 5 for j in range(6)]))
    test = features.compute("question", [_document(j, 10.0 - j) for j in range(6)])
    free = fit_lambdarank(features, items, None, 0, lambdarank_parameters(features, monotone=False)).predict(test)
    constrained = fit_lambdarank(features, items, None, 0, lambdarank_parameters(features, monotone=True)).predict(test)
    assert free.argmax() == 5  # the first stage read backwards
    assert all(np.diff(constrained) <= 0)  # never above a candidate the first stage ranked higher


def test_a_ranker_does_not_read_chunk_positions_later_than_it_was_trained_on():
    """Trained where the second chunk of a document is always the gold one (short documents), the ranker
    promotes a second chunk; on a list with a later chunk than any it saw, positions read 0 and the first
    stage's order stands."""
    from hopstack.datasets.base import BenchmarkQuestion
    from hopstack.training.reranker import Ranked, fit_lambdarank, lambdarank_parameters, latest_chunk_position

    items = []
    for i in range(60):
        documents = [_document(j, 10.0 - j + 0.01 * i, position=j % 2) for j in range(4)]
        question = BenchmarkQuestion(f"q{i}", f"question {i}", [], ["d1"], [])
        items.append(Ranked(question, documents, [j == 1 for j in range(4)]))
    limit = latest_chunk_position(items)
    features = RankingFeatures(("source",), chunk_position_limit=limit)
    assert limit == 1 and RankingFeatures.from_dict(features.to_dict()) == features
    assert RankingFeatures.from_dict(RankingFeatures(("source",)).to_dict()).chunk_position_limit is None
    booster = fit_lambdarank(features, items, None, 0, lambdarank_parameters(features, monotone=True))
    short = [_document(j, 10.0 - j, position=p) for j, p in enumerate([0, 1, 0, 0])]
    longer = [_document(j, 10.0 - j, position=p) for j, p in enumerate([0, 1, 0, 5])]
    assert booster.predict(features.compute("q", short)).argmax() == 1
    column = features.names().index("chunk_position")
    assert features.compute("q", longer)[:, column].tolist() == [0, 0, 0, 0]
    assert RankingFeatures(("source",)).compute("q", longer)[:, column].tolist() == [0, 1, 0, 5]  # no limit
    assert booster.predict(features.compute("q", longer)).argmax() == 0


def test_the_domain_check_trusts_the_scorer_only_near_a_training_corpus():
    rng = np.random.default_rng(0)

    def profiles(direction: int, count: int) -> list[np.ndarray]:
        """Profiles of ``count`` questions whose candidates cluster around one axis of 8."""
        rows = []
        for _ in range(count):
            vectors = rng.normal(0, 0.3, (5, 8))
            vectors[:, direction] += 1
            rows.append(candidate_profile(vectors / np.linalg.norm(vectors, axis=1, keepdims=True)))
        return rows

    news, papers = profiles(0, 200), profiles(1, 200)
    check = DomainCheck.fit({"news": news, "papers": papers}, quantile=0.05)
    assert check.datasets == ("news", "papers") and DomainCheck.from_dict(check.to_dict()) == check
    assert np.allclose(np.linalg.norm(np.array(check.centroids), axis=1), 1, atol=1e-5)
    for rows in (news, papers):  # the quantile's share of a corpus's own questions falls below
        assert 0.02 <= 1 - check.familiar(np.array(rows)).mean() <= 0.08
    assert check.familiar(np.array(profiles(2, 50))).sum() == 0  # an unseen corpus is never trusted
    assert check.familiar(np.array(profiles(0, 50) + profiles(1, 50))).mean() > 0.9
    assert candidate_profile(np.zeros((0, 8))).shape == (8,)
    with pytest.raises(ValueError, match="one centroid and one threshold per dataset"):
        DomainCheck.from_dict({**check.to_dict(), "thresholds": [0.5]})


def _sources_dataset(folder, count: int = 150):
    """Per question ``What did SOURCE report about widgetN?`` five chunks of the same words, one per source:
    only the chunk's ``source`` field says which is gold."""
    folder.mkdir(parents=True)
    corpus, questions = [], []
    for i in range(count):
        named = SOURCES[i % len(SOURCES)]
        for j, source in enumerate(SOURCES):
            text = f"A report about widget{i}, item {j}: sales rose."
            corpus.append({"id": f"w{i}-{source}", "title": f"widget{i}", "text": text, "source": source})
        question = f"What did {named} report about widget{i}?"
        questions.append({"id": f"q{i}", "question": question, "answers": [], "gold_ids": [f"w{i}-{named}"]})
    (folder / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    return folder


@pytest.fixture(scope="module")
def ranker_home(tmp_path_factory):
    """A features-only ranker ``sources-ranker`` trained once through the CLI's code path."""
    from hopstack.training.reranker import RerankerTraining, train_reranker

    root = tmp_path_factory.mktemp("learned")
    data = _sources_dataset(root / "sources")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOPSTACK_HOME", str(root / "home"))
        config = RerankerTraining(
            dataset=str(data), index=str(data / "corpus.jsonl"), out="sources-ranker",
            negatives=str(REPO / "yaml" / "bm25.yaml"), depth=5, dev_share=0.25, cross_encoder=False,
            named_fields=("source",),
        )  # fmt: skip
        manifest = train_reranker(config)
    return root / "home", manifest


def test_a_features_only_ranker_learns_what_the_metadata_says(ranker_home, monkeypatch):
    home, manifest = ranker_home
    monkeypatch.setenv("HOPSTACK_HOME", str(home))
    folder = trained_model_dir("sources-ranker")
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    assert manifest["cross_encoder"] is False and manifest["training_pairs"] is None
    assert manifest["ranker"]["features"]["names"] == RankingFeatures(("source",)).names()
    assert manifest["ranker"]["features"]["chunk_position_limit"] == 0  # one-chunk documents
    assert (folder / manifest["ranker"]["file"]).is_file() and not (folder / "model.safetensors").exists()
    dev = manifest["dev"]["metrics"]
    assert dev["learned"]["MRR@10"] == 1.0 and dev["first_stage"]["MRR@10"] < 0.8
    reranker = LearnedReranker("sources-ranker", top_k=3)
    candidates = [_document(i, 10.0 - i, source=s) for i, s in enumerate(["Acme", "Globex", "Initech", "Wired"])]
    planted = _document(9, 0.0, source="Hooli")
    ranked = reranker.run(query="What did Hooli report about gadget7?", documents=[*candidates, planted])
    assert [d.id for d in ranked["documents"]][0] == "d9" and len(ranked["documents"]) == 3
    assert reranker.content_identity() is not None


@pytest.mark.slow
def test_a_pipeline_runs_the_ranker_by_name(ranker_home, monkeypatch, cli, tmp_path):
    home, _ = ranker_home
    monkeypatch.setenv("HOPSTACK_HOME", str(home))
    text = (REPO / "yaml" / "hybrid-learned.yaml").read_text().replace("model: mhr-ranker", "model: sources-ranker")
    pipeline = tmp_path / "learned.yaml"
    pipeline.write_text(text)
    data = home.parent / "sources"
    code, out, err = cli(
        "eval", pipeline, "--dataset", data, "--index", data / "corpus.jsonl", "--split", "test", "--limit", "20",
        "--json", tmp_path / "eval.json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "eval.json").read_text())["metrics"]["MRR@10"] == 1.0


def test_a_model_without_a_ranker_is_refused_by_name(ranker_home, monkeypatch, tmp_path):
    monkeypatch.setenv("HOPSTACK_HOME", str(tmp_path))
    folder = tmp_path / "models" / "plain"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"name": "plain"}))
    with pytest.raises(HopstackInputError, match="has no 'ranker' section"):
        LearnedReranker("plain").warm_up()


def test_a_features_only_model_is_no_cross_encoder(ranker_home, monkeypatch):
    from hopstack.components.rerankers import PointwiseReranker

    monkeypatch.setenv("HOPSTACK_HOME", str(ranker_home[0]))
    reranker = PointwiseReranker({"type": "cross-encoder", "init_parameters": {"model": "sources-ranker"}})
    with pytest.raises(HopstackInputError, match="has no cross-encoder"):
        reranker.warm_up()


def test_the_shipped_ranker_loads_by_name_from_a_fresh_home(cli, tmp_path, monkeypatch):
    from hopstack.models.registry import resolve_model, shipped_model_dir

    monkeypatch.setenv("HOPSTACK_HOME", str(tmp_path))
    assert resolve_model("mhr-ranker") == str(shipped_model_dir("mhr-ranker"))
    reranker = LearnedReranker("mhr-ranker")
    reranker.warm_up()  # the manifest's feature names are the ones this code computes
    manifest = json.loads((shipped_model_dir("mhr-ranker") / "manifest.json").read_text())
    assert manifest["split"] == "train" and manifest["command"].startswith("hopstack train reranker")
    code, out, _ = cli("models", "list")
    assert code == 0 and "mhr-ranker" in out and "shipped: hopstack train on multihop-rag (train)" in out


NAMED_QUERY = "Which company did TechCrunch report on October 4, 2023 as announcing a new laptop chip?"


def _named_source_documents() -> list[Document]:
    """Five near-identical chunks in first-stage order; only the fourth's source and date are in NAMED_QUERY."""
    sources = ["The Verge", "Wired", "Engadget", "TechCrunch", "BBC News"]
    return [
        Document(
            id=str(i),
            content=f"A company announced a new chip for laptops, according to report {i}.",
            score=1.0 - 0.05 * i,
            meta={"source": source, "published_at": f"2023-10-0{i + 1}T10:00:00+00:00", "doc_id": f"a{i}"},
        )
        for i, source in enumerate(sources)
    ]


def _shipped_manifest(name: str) -> dict:
    """A shipped ranker's manifest, after checking it was trained on the three train splits and ships
    without its training pairs in under 50 MB of weights."""
    from hopstack.models.registry import shipped_model_dir

    folder = shipped_model_dir(name)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["dataset"] == "multihop-rag+2wikimultihopqa+scifact" and manifest["split"] == "train"
    assert json.loads((folder / "config.json").read_text())["dtype"] == "float16"
    assert (folder / "model.safetensors").stat().st_size < 50e6 and not (folder / "training_pairs.jsonl").exists()
    return manifest


def test_the_shipped_cross_encoder_reranker_moves_the_named_source_and_date_first(tmp_path, monkeypatch):
    monkeypatch.setenv("HOPSTACK_HOME", str(tmp_path))
    manifest = _shipped_manifest("hopstack-reranker")
    assert manifest["hyperparameters"]["layers"] == 3
    reranker = LearnedReranker("hopstack-reranker", top_k=5, device="cpu")
    ranked = reranker.run(query=NAMED_QUERY, documents=_named_source_documents())["documents"]
    assert ranked[0].id == "3"  # the chunk whose source and date the question names
    assert reranker._scorer.max_length == manifest["hyperparameters"]["max_length"] == 128


def test_the_shipped_bi_encoder_reranker_moves_the_named_source_and_date_first(tmp_path, monkeypatch):
    monkeypatch.setenv("HOPSTACK_HOME", str(tmp_path))
    manifest = _shipped_manifest("hopstack-reranker-bi")
    assert manifest["bi_encoder"] and manifest["hyperparameters"]["monotone"]
    assert manifest["ranker"]["features"]["version"] == 2
    assert manifest["ranker"]["features"]["chunk_position_limit"] == 71  # MultiHop-RAG's long articles
    domain = manifest["ranker"]["domain"]
    assert domain["datasets"] == ["multihop-rag", "2wikimultihopqa", "scifact"]
    assert domain["quantile_choice"]["rule"] == "auto" and "--domain-quantile auto" in manifest["command"]
    reranker = LearnedReranker("hopstack-reranker-bi", top_k=5, device="cpu")
    ranked = reranker.run(query=NAMED_QUERY, documents=_named_source_documents())["documents"]
    assert ranked[0].id == "3"
    assert isinstance(reranker._scorer, BiEncoderScorer)
