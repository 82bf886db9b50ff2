"""Iterative multi-hop retrieval: the hop loop inside one component (docs/concepts/iteration.md).

:class:`IterativeRetriever` holds a retriever, a query reformulator and a stopper as nested
``{type, init_parameters}`` components and keeps per-question state. Hop 1 retrieves for the question;
after each hop the stopper decides, for the questions still running, whether the evidence so far suffices
(:mod:`hopstack.components.stopping`: natural logic, a score threshold, fixed hops, answer triggers); the
others get a new query from the reformulator (:class:`QueryReformulator`: the LLM writes the next search
query from the question and the evidence) and hop again. Questions that stop leave the next hop's batch,
and ``max_hops`` ends the loop cleanly. Each hop's calls (retriever, stopper, reformulator) cover every
question still running in one ``run_batch`` call.
"""

from typing import Any

from haystack import Document, component

from hopstack.components.base import WrapsRetriever
from hopstack.core.batch import BatchComponent, batch_size_of, call_batch
from hopstack.core.spec import build
from hopstack.core.text import numbered_passages, prompt_passages
from hopstack.models.cache import LLMUser

REFORMULATE_SYSTEM = (
    "You write search queries for a multi-hop question. Given the question and the documents found so far, "
    "write one short search query for the fact that is still missing. Reply with the query only."
)
REFORMULATE_FEW_SHOT = [
    (
        "Who is the mother of the director of the film Hollin Ford?",
        ["Hollin Ford. Hollin Ford is a 1954 drama film directed by Edda Varrow."],
        "Edda Varrow mother",
    ),
    (
        "Which company, reported by both Tech Daily and Market Watch, cut its prices in May?",
        ["Tech Daily. Orbit cut the price of its phones on 3 May, the company said."],
        "Market Watch Orbit price cut May",
    ),
]


@component
class QueryReformulator(LLMUser, BatchComponent):
    """The next hop's search query, written by an LLM from the question and the evidence so far (greedy;
    the first line of the reply, quotes stripped; the question itself when the reply is empty).

    :param llm: an LLM spec.
    :param max_documents: documents shown, best first.
    :param max_passage_words: words kept of each document.
    :param max_tokens: the query's length budget.
    :param cache: use the on-disk call cache.
    """

    reformulates = True  # the Reformulator role (hopstack.core.roles)

    def __init__(
        self,
        llm: str | dict[str, Any] = "qwen2.5-0.5b",
        max_documents: int = 3,
        max_passage_words: int = 60,
        max_tokens: int = 32,
        cache: bool = True,
    ):
        if min(max_documents, max_passage_words, max_tokens) < 1:
            raise ValueError("max_documents, max_passage_words and max_tokens must be at least 1")
        self.use_llm(llm, cache)
        self.max_documents = max_documents
        self.max_passage_words = max_passage_words
        self.max_tokens = max_tokens

    @component.output_types(query=str)
    def run(self, question: str, documents: list[Document]) -> dict[str, Any]:
        """The next query for one question."""
        return self.run_single(question=question, documents=documents)

    def run_batch(self, question: list[str], documents: list[list[Document]]) -> dict[str, list[Any]]:
        """The next queries of a batch, in one LLM call."""
        batch_size_of({"question": question, "documents": documents})
        self.warm_up()
        prompts = []
        for q, docs in zip(question, documents):
            messages = [{"role": "system", "content": REFORMULATE_SYSTEM}]
            for example_question, example_documents, example_query in REFORMULATE_FEW_SHOT:
                messages.append({"role": "user", "content": _user_turn(example_question, example_documents)})
                messages.append({"role": "assistant", "content": example_query})
            passages = prompt_passages(docs[: self.max_documents], True, self.max_passage_words)
            messages.append({"role": "user", "content": _user_turn(q, passages)})
            prompts.append(messages)
        replies = self._llm.generate(prompts, max_tokens=self.max_tokens)
        queries = []
        for q, reply in zip(question, replies):
            line = next((part.strip() for part in reply.splitlines() if part.strip()), "")
            queries.append(line.strip("\"'`*").strip() or q)
        return {"query": queries}


def _user_turn(question: str, passages: list[str]) -> str:
    listed = numbered_passages(passages, "(none)")
    return f"Question: {question}\n\nDocuments found so far:\n{listed}\n\nNext search query:"


MERGE_ORDERS = ("interleave", "append")


@component
class IterativeRetriever(WrapsRetriever, BatchComponent):
    """Multi-hop retrieval until a stopper says the evidence suffices, or ``max_hops``.

    Per question the output ``documents`` are every hop's documents, each once (its first occurrence):
    ``merge: interleave`` takes them round-robin over the hops (hop 1's first, hop 2's first, ..., then
    the seconds), so a later hop's finds reach the top ranks; ``append`` lists hop 1's, then hop 2's new
    ones. ``trace`` gives the hops used, the queries, why it stopped (``stopper`` or ``budget``) and the
    stopper's trace of each hop (a natural-logic proof, a score, an LLM reply).

    :param retriever: ``{"type", "init_parameters"}`` of a retriever (``query`` -> ``documents``).
    :param stopper: ``{"type", "init_parameters"}`` of a stopper (:mod:`hopstack.components.stopping`).
    :param reformulator: ``{"type", "init_parameters"}`` of a query writer (``question, documents`` ->
        ``query``; default :class:`QueryReformulator` with its defaults).
    :param max_hops: the hop budget.
    :param top_k: documents kept in the output (None: all).
    :param merge: ``interleave`` or ``append``.
    :param index: when set, the retriever's ``index`` (so ``--index`` reaches it).
    """

    loops_hops = True  # the HopLoop role (hopstack.core.roles)
    retrieves = True  # the Retriever role too

    def __init__(
        self,
        retriever: dict[str, Any],
        stopper: dict[str, Any],
        reformulator: dict[str, Any] | None = None,
        max_hops: int = 3,
        top_k: int | None = None,
        merge: str = "interleave",
        index: str | None = None,
    ):
        if max_hops < 1:
            raise ValueError(f"max_hops must be at least 1, got {max_hops}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be at least 1 or null, got {top_k}")
        if merge not in MERGE_ORDERS:
            raise ValueError(f"merge must be one of {', '.join(MERGE_ORDERS)}, got {merge!r}")
        self.use_retriever(retriever, index)
        self.stopper = stopper
        self.reformulator = reformulator
        self.max_hops = max_hops
        self.top_k = top_k
        self.merge = merge
        self._stopper = build(stopper, "stopper")
        default_reformulator = {"type": "hopstack.components.iterate.QueryReformulator"}
        self._reformulator = build(reformulator or default_reformulator, "reformulator")

    def warm_up(self) -> None:
        """Warm up the nested components."""
        for part in (self._retriever, self._stopper, self._reformulator):
            if callable(getattr(part, "warm_up", None)):
                part.warm_up()

    @component.output_types(documents=list[Document], trace=dict[str, Any])
    def run(self, query: str) -> dict[str, Any]:
        """Retrieve for one question, hop by hop."""
        return self.run_single(query=query)

    def run_batch(self, query: list[str]) -> dict[str, list[Any]]:
        """Retrieve for a batch, hop by hop; each hop's calls cover the questions still running."""
        if not query:
            return {"documents": [], "trace": []}
        self.warm_up()
        hops: list[list[list[Document]]] = [[] for _ in query]
        traces: list[dict[str, Any]] = [{"queries": [], "stopper": [], "stopped": "budget"} for _ in query]
        current = {i: q for i, q in enumerate(query)}
        for hop in range(1, self.max_hops + 1):
            active = list(current)
            found = call_batch(self._retriever, query=[current[i] for i in active])["documents"]
            for i, documents in zip(active, found):
                hops[i].append(list(documents))
                traces[i]["queries"].append(current[i])
            if hop == self.max_hops:
                break
            evidence = [self._merged(hops[i]) for i in active]
            decided = call_batch(
                self._stopper, query=[query[i] for i in active], documents=evidence, hop=[hop] * len(active)
            )
            going = []
            for i, docs, stop, trace in zip(active, evidence, decided["stop"], decided["trace"]):
                traces[i]["stopper"].append(trace)
                if stop:
                    traces[i]["stopped"] = "stopper"
                    del current[i]
                else:
                    going.append((i, docs))
            if not going:
                break
            written = call_batch(
                self._reformulator, question=[query[i] for i, _ in going], documents=[docs for _, docs in going]
            )
            current = {i: q for (i, _), q in zip(going, written["query"])}
        for trace, per_hop in zip(traces, hops):
            trace["hops"] = len(per_hop)
        return {"documents": [self._merged(per_hop)[: self.top_k] for per_hop in hops], "trace": traces}

    def _merged(self, per_hop: list[list[Document]]) -> list[Document]:
        if self.merge == "append":
            ordered = [d for documents in per_hop for d in documents]
        else:
            longest = max((len(documents) for documents in per_hop), default=0)
            ordered = [documents[r] for r in range(longest) for documents in per_hop if r < len(documents)]
        seen: set[str] = set()
        return [d for d in ordered if not (d.id in seen or seen.add(d.id))]
