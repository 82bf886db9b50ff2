"""REBEL's faithful-mode prompts (docs/methods/rebel.md#method), reconstructed.

The verbatim prompt texts (``DEFAULT_REBEL_CHOICE_SELECT_PROMPT_TMPL`` and ``DEFAULT_REBEL_META_PROMPT_TMPL``
in the bvarjavand/llama_index fork) were not reachable offline. These prompts are written from the
description in docs/methods/rebel.md#method: the same criteria, anchors, scales, weights, procedure, output format and
closing choice-select example block (llama_index's stock few-shot block). Label runs with them
"REBEL-style, prompts reconstructed", not a reproduction. Placeholders are ``{context_str}`` and
``{query_str}`` (and ``{user_query}`` in the meta-prompt); they are filled by :func:`fill`, plain text
replacement, so braces elsewhere in a prompt (an LLM-written one too) cannot break it.
"""

CHOICE_SELECT_EXAMPLE = """Example format:
Document 1:
<summary of document 1>

Document 2:
<summary of document 2>

...

Document 10:
<summary of document 10>

Question: <question>
Answer:
Doc: 9, Relevance: 7
Doc: 3, Relevance: 4
Doc: 7, Relevance: 3

Let's try this now:

{context_str}
Question: {query_str}
Answer:
"""

ONE_TURN_PROMPT = (
    """You are a re-ranking system. A list of documents is shown below, each with a number, and a question.
Score the documents and list the ones worth consulting to answer the question.

1. Score each document's Relevance to the question from 0 to 10 (10 = directly and comprehensively
   addresses the question; 0 = off-topic). Discard every document with Relevance below 3.
2. Score each remaining document on five secondary criteria, each from 0 to 5:
   - Depth of Content: 5 = exceptionally in-depth, covers multiple facets; 0 = very superficial.
   - Diversity of Perspectives: 5 = presents many viewpoints or sources; 0 = entirely one-sided.
   - Clarity and Specificity: 5 = highly specific and clear; 0 = vague or overly general.
   - Authoritativeness: 5 = extensively cited academic work or official standard; 0 = unknown or dubious
     source.
   - Recency: 5 = very current; 0 = outdated or no time-sensitive information.
3. Compute Final = Relevance + 0.5*Depth + 0.5*Diversity + 0.5*Clarity + 0.5*Authoritativeness + 0.5*Recency
   and sort the documents by Final, highest first.
4. Break ties by the higher Authoritativeness.
5. If no document qualifies, output nothing.
6. Output only lines of the form "Doc: [document number], Relevance: [score]", where the score is the Final
   score, not the relevance score.

"""
    + CHOICE_SELECT_EXAMPLE
)

META_PROMPT = (
    """You are a prompt generator. You see only a user's search query:
{user_query}

Write the prompt for a document re-ranking system that will score retrieved documents for this query.
First infer which properties beyond relevance make a document most useful for this query's subject,
choosing from: domain appropriateness or technical accuracy, diversity of perspectives, temporal relevance
or recency, depth and specificity, trustworthiness or neutrality, depth of reasoning or conceptual
complexity, authoritativeness. Then write a prompt that:
(a) includes the query verbatim;
(b) defines each property you chose;
(c) gives a scoring rubric for Relevance from 0 to 10 and for each property from 0 to 5;
(d) defines a weighted composite score, for example Final = Relevance + 0.5*P1 + 0.5*P2 + 0.5*P3, with
    weights you choose: the composite decides the order, it does not only break ties;
(e) discards documents with Relevance below 3;
(f) sorts the documents by Final, breaks ties consistently, and outputs nothing if none qualifies;
(g) outputs only lines of the form "Doc: [document number], Relevance: [score]", where the score is Final;
(h) ALWAYS NO MATTER WHAT ends with exactly this block, placeholders included:

"""
    + CHOICE_SELECT_EXAMPLE
    + """
Examples of the properties to infer (each weighted 0.5):
1. "How does tax policy affect income inequality?": diversity of perspectives, authoritativeness,
   comparative breadth.
2. "What are the latest treatments for chronic back pain?": recency, authoritativeness, specificity.
3. "What were Qin Shi Huang's main policies?": historical depth, range of perspectives, cultural and
   political detail.
4. "Compare TensorFlow, PyTorch and scikit-learn.": technical accuracy, comparative breadth,
   authoritativeness.
5. "What are the arguments for and against universal basic income?": balance of perspectives, depth of
   reasoning, authoritativeness.

Write only the re-ranking prompt."""
)

PLACEHOLDERS = ("{context_str}", "{query_str}")


def fill(template: str, **values: str) -> str:
    """``template`` with each ``{name}`` replaced by ``values[name]`` (text replacement, not ``str.format``)."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


def usable_prompt(text: str) -> str | None:
    """An LLM-written re-ranking prompt if it has both placeholders (docs/methods/rebel.md#faithful), else ``None``."""
    return text if all(p in text for p in PLACEHOLDERS) else None
