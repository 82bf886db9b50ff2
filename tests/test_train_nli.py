"""`hopstack train nli` and the prover's trained operators: the pairs SciFact-style claims and 2Wiki-style
triples give, training end to end on a tiny randomly initialised BERT, loading the model by name, planted
supporting and contradicting sentences proved SUPPORTS and REFUTES, and bad input refused."""

import json

import pytest
import torch

from conftest import SAMPLE_CORPUS, save_tiny_bert
from hopstack.components.stopping import NOT_ENOUGH_INFO, REFUTES, SUPPORTS, NaturalLogicProver, nli_operator
from hopstack.datasets.benchmark import load_dataset
from hopstack.errors import HopstackInputError
from hopstack.models.cross_encoder import NliClassifier, nli_columns
from hopstack.models.registry import resolve_model, shipped_model_dir, trained_model_dir
from hopstack.training.nli import NliTraining, chunk_pairs, negated_claim, nli_pairs, train_nli
from hopstack.training.reranker import partial_dir

SUPPORTING = "The {name} is certified and approved by the registry."
CONTRADICTING = "The {name} is rejected and banned by the registry."
UNRELATED = "The {name} was painted {colour} in a shed."


def _claims_folder(folder, count: int = 40, claim: str = "The {name} is approved."):
    """A SciFact-style BEIR folder: claim i (``claim`` about "widgetI") with one abstract whose first sentence
    supports it (even i) or contradicts it (odd i) and whose second is unrelated; the first ``count`` claims
    are the train split, two more the test split."""
    (folder / "qrels").mkdir(parents=True)
    corpus, queries, claims = [], [], []
    for i in range(count + 2):
        name = f"widget{i}"
        first = (SUPPORTING if i % 2 == 0 else CONTRADICTING).format(name=name)
        corpus.append({"_id": f"d{i}", "title": name, "text": f"{first} {UNRELATED.format(name=name, colour='red')}"})
        queries.append({"_id": str(i), "text": claim.format(name=name)})
        label = "SUPPORT" if i % 2 == 0 else "CONTRADICT"
        evidence = {f"d{i}": [{"sentences": [0], "label": label}]}
        claims.append({"id": i, "claim": claim.format(name=name), "evidence": evidence, "cited_doc_ids": [i]})
    for split, ids in (("train", range(count)), ("test", range(count, count + 2))):
        rows = "".join(f"{i}\td{i}\t1\n" for i in ids)
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries), ("claims_train.jsonl", claims)):
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_scifact_style_claims_give_entailment_contradiction_and_neutral_pairs_of_the_split_only(tmp_path):
    folder = _claims_folder(tmp_path / "claims", count=4)
    pairs = nli_pairs(load_dataset(str(folder), "train"), neutrals=1)
    claim_level = [(p["id"], p["premise"], p["hypothesis"], p["label"]) for p in pairs if p["grain"] == "claim"]
    assert claim_level[:4] == [
        ("0", SUPPORTING.format(name="widget0"), "The widget0 is approved.", "entailment"),
        ("0", SUPPORTING.format(name="widget0"), "The widget0 is not approved.", "contradiction"),  # augmented
        ("0", UNRELATED.format(name="widget0", colour="red"), "The widget0 is approved.", "neutral"),
        ("1", CONTRADICTING.format(name="widget1"), "The widget1 is approved.", "contradiction"),
    ]
    assert {p["id"] for p in pairs} == {"0", "1", "2", "3"}  # the test claims 4 and 5 are never read
    chunks = {(p["premise"], p["hypothesis"], p["label"]) for p in pairs if p["grain"] == "chunk"}
    supporting = SUPPORTING.format(name="widget0")
    # "The widget0 is not approved." differs from the claim in its last chunk only
    assert {(supporting, "The widget0", "entailment"), (supporting, "is approved", "entailment")} <= chunks
    assert (supporting, "is not approved", "contradiction") in chunks
    # the unrelated sentence shares "widget0" with the first chunk: only the other is neutral
    assert (UNRELATED.format(name="widget0", colour="red"), "is approved", "neutral") in chunks
    assert not any(h == "The widget0" and label == "neutral" for _, h, label in chunks)


def test_negated_claims_swap_an_opposite_or_add_not_after_the_first_auxiliary():
    assert negated_claim("Vitamin D increases bone density.") == "Vitamin D decreases bone density."
    assert negated_claim("Lower doses are safer.") == "Higher doses are safer."
    assert negated_claim("Aspirin is used in stroke.") == "Aspirin is not used in stroke."
    assert negated_claim("Aspirin is not used in stroke.") is None
    assert negated_claim("Cells grow.") is None


def test_triples_give_a_claim_its_supporting_sentence_entails_and_a_swapped_object_contradicts(tmp_path):
    records = []
    for i, (relation, obj) in enumerate([("director", "Ada Brannock"), ("director", "Tom Hollin")] * 10):
        title = f"Film {i}"
        sentences = [f"Film {i} is a drama directed by {obj}.", f"Film {i} premiered at a festival in spring."]
        records.append(
            {
                "_id": f"q{i}", "question": f"Who directed Film {i}?", "answer": obj, "type": "compositional",
                "context": [[title, sentences]], "supporting_facts": [[title, 0]],
                "evidences": [[title, relation, obj]],
            }
        )  # fmt: skip
    path = tmp_path / "triples.json"
    path.write_text(json.dumps(records))
    data = load_dataset(str(path), "train")
    assert data.questions
    pairs = [p for p in nli_pairs(data, neutrals=1, seed=0) if p["grain"] == "claim"]
    question = data.questions[0]
    own = [(p["premise"], p["hypothesis"], p["label"]) for p in pairs if p["id"] == question.id]
    record = next(r for r in records if r["_id"] == question.id)
    sentence, other = record["context"][0][1]
    obj = record["evidences"][0][2]
    swapped = "Tom Hollin" if obj == "Ada Brannock" else "Ada Brannock"
    title = record["context"][0][0]
    assert own == [
        (sentence, f"The director of {title} is {obj}.", "entailment"),
        (sentence, f"The director of {title} is {swapped}.", "contradiction"),
        (other, f"The director of {title} is {obj}.", "neutral"),
    ]
    chunks = chunk_pairs([p for p in pairs if p["id"] == question.id])
    assert (sentence, f"is {swapped}", "contradiction") in {(p["premise"], p["hypothesis"], p["label"]) for p in chunks}


def test_nli_operators_project_the_three_classes():
    probabilities = {"entailment": 0.7, "neutral": 0.2, "contradiction": 0.1}
    assert nli_operator("the mill", "The mill", probabilities, 0.5) == "="
    assert nli_operator("the mill", "the old mill", probabilities, 0.5) == "<"
    assert nli_operator("the mill", "the mill", probabilities, 0.8) == "#"
    assert nli_operator("the mill", "the mill", {"entailment": 0.1, "neutral": 0.2, "contradiction": 0.7}, 0.5) == "!"
    assert nli_operator("the mill", "the mill", {"entailment": 0.3, "neutral": 0.4, "contradiction": 0.3}, 0.2) == "#"
    assert nli_columns({0: "CONTRADICTION", 1: "ENTAILMENT", 2: "NEUTRAL"}) == [1, 2, 0]
    with pytest.raises(HopstackInputError, match="do not name neutral, contradiction"):
        nli_columns({0: "LABEL_0", 1: "entailment"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny NLI model trained once for the module: (its manifest, the HOPSTACK_HOME it lives in)."""
    root = tmp_path_factory.mktemp("nli")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOPSTACK_HOME", str(root / "home"))
        base = save_tiny_bert(root / "tiny-bert", "BertForSequenceClassification", num_labels=3)
        # claims without an auxiliary verb get no negated twin: the label is then the premise's alone, which a
        # random tiny BERT learns in 15 epochs (telling "approved" from "not approved" takes it ~100)
        folder = _claims_folder(root / "claims", claim="The {name} passed inspection.")
        config = NliTraining(
            dataset=str(folder), out="tiny-nli", base=base, neutrals=1, epochs=15, max_length=32, batch_size=8,
            learning_rate=2e-3, dev_share=0.2, device="cpu",
        )  # fmt: skip
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the tiny model's training is then the same on every machine
        try:
            manifest = train_nli(config)
        finally:
            torch.set_num_threads(threads)
        yield manifest, root / "home"


def test_the_manifest_says_how_the_operator_model_was_made(trained, monkeypatch):
    manifest, home = trained
    monkeypatch.setenv("HOPSTACK_HOME", str(home))
    folder = trained_model_dir("tiny-nli")
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    assert (manifest["role"], manifest["labels"], manifest["split"]) == (
        "NLI operator model",
        ["entailment", "neutral", "contradiction"],
        "train",
    )
    lines = [json.loads(line) for line in (folder / "training_pairs.jsonl").read_text().splitlines()]
    assert manifest["training_pairs"]["pairs"] == len(lines) and {p["grain"] for p in lines} == {"claim", "chunk"}
    dev = manifest["dev"]
    assert dev["pairs"] + len(lines) == sum(sum(d[k] for k in manifest["labels"]) for d in manifest["datasets"])
    assert manifest["hyperparameters"]["loss"] == "CrossEntropyLoss" and manifest["seconds"] > 0
    assert manifest["command"].startswith("hopstack train nli --dataset ")
    assert not partial_dir("tiny-nli").exists()


def test_planted_supporting_and_contradicting_sentences_are_proved_end_to_end(trained, monkeypatch):
    monkeypatch.setenv("HOPSTACK_HOME", str(trained[1]))
    assert resolve_model("tiny-nli") == str(trained_model_dir("tiny-nli"))
    # align_threshold 0: every chunk aligns, so the verdict is the operator model's alone
    prover = NaturalLogicProver(operator_model="tiny-nli", align_threshold=0.0, device="cpu", cache=False)
    claim = "The gadget7 passed inspection."  # one chunk: the proof has one step
    contradicting = CONTRADICTING.format(name="gadget7")
    evidence = [[SUPPORTING.format(name="gadget7")], [contradicting], [UNRELATED.format(name="gadget7", colour="teal")]]
    proofs = prover.prove([claim] * 3, evidence)
    assert [p["verdict"] for p in proofs] == [SUPPORTS, REFUTES, NOT_ENOUGH_INFO]
    assert [p["operators"] for p in proofs] == [["<"], ["!"], ["#"]]
    assert prover._llm is None  # no LLM was loaded: the operators are the model's
    (step,) = proofs[1]["steps"]
    assert (step["claim_span"], step["evidence_sentence"]) == ("The gadget7 passed inspection", contradicting)
    assert set(step["nli"]) == {"entailment", "neutral", "contradiction"}
    # claim level: the whole claim against each evidence sentence decides
    for alignment in ("ngrams", "tokens"):
        whole = NaturalLogicProver(
            operator_model="tiny-nli", nli_level="claim", align_threshold=0.0, alignment=alignment, cache=False
        )
        proofs = whole.prove([claim] * 3, evidence)
        assert [p["verdict"] for p in proofs] == [SUPPORTS, REFUTES, NOT_ENOUGH_INFO], alignment
        assert [row["sentence"] for row in proofs[1]["claim_nli"]] == [contradicting]
    unaligned = NaturalLogicProver(operator_model="tiny-nli", nli_level="claim", align_threshold=0.99, cache=False)
    (proof,) = unaligned.prove([claim], evidence[:1])
    assert (proof["verdict"], proof["claim_nli"], proof["operators"]) == (NOT_ENOUGH_INFO, [], ["#"])


def test_the_shipped_operator_model_proves_refutes_and_abstains_on_planted_facts(tmp_path, monkeypatch):
    monkeypatch.setenv("HOPSTACK_HOME", str(tmp_path))  # no trained model of that name can shadow it
    manifest = json.loads((shipped_model_dir("hopstack-nli") / "manifest.json").read_text())
    assert (manifest["role"], manifest["split"], manifest["hyperparameters"]["float16"]) == (
        "NLI operator model",
        "train",
        True,
    )
    assert manifest["dev"]["macro_f1"] > 0.6, "held-out train questions"
    prover = NaturalLogicProver(
        operator_model="hopstack-nli", nli_level="claim", alignment="tokens", device="cpu", cache=False
    )
    claim = "Edda Varrow was born in Leeds."
    evidence = [
        ["Edda Varrow ; Edda Varrow (born 3 May 1910 in Leeds) was an English film director."],
        ["Edda Varrow ; Edda Varrow (born 3 May 1910 in Bristol) was an English film director."],
        ["Edda Varrow ; She directed four films."],
    ]
    proofs = prover.prove([claim] * 3, evidence)
    assert [p["verdict"] for p in proofs] == [SUPPORTS, REFUTES, NOT_ENOUGH_INFO]
    assert prover._llm is None


def test_bad_operator_models_and_training_requests_are_refused(trained, monkeypatch, tmp_path, cli):
    monkeypatch.setenv("HOPSTACK_HOME", str(trained[1]))
    one_label = save_tiny_bert(tmp_path / "relevance", "BertForSequenceClassification", num_labels=1)
    with pytest.raises(HopstackInputError, match="not an NLI model"):
        NliClassifier(one_label, device="cpu", cache=False).warm_up()
    with pytest.raises(ValueError, match="operator_model must be a model name"):
        NaturalLogicProver(operator_model="  ")
    with pytest.raises(ValueError, match="nli_threshold"):
        NaturalLogicProver(operator_model="tiny-nli", nli_threshold=1.5)
    with pytest.raises(ValueError, match="nli_level must be one of"):
        NaturalLogicProver(operator_model="tiny-nli", nli_level="span")
    before = {p: p.read_bytes() for p in trained[1].rglob("*") if p.is_file()}
    # a dataset with neither claims nor triples (the shipped sample, a generic folder, like MultiHop-RAG)
    code, _, err = cli("train", "nli", "--dataset", str(SAMPLE_CORPUS.parent), "--out", "x", "--limit", "5")
    assert code == 2 and "has neither" in err
    claims = _claims_folder(tmp_path / "claims", count=2)
    code, _, err = cli("train", "nli", "--dataset", str(claims), "--out", "tiny-nli")
    assert code == 2 and "model 'tiny-nli' exists" in err
    bare = _claims_folder(tmp_path / "bare", count=2)
    (bare / "claims_train.jsonl").unlink()
    code, _, err = cli("train", "nli", "--dataset", str(bare), "--out", "x")
    assert code == 2 and "no claims_*.jsonl files" in err
    assert {p: p.read_bytes() for p in trained[1].rglob("*") if p.is_file()} == before
