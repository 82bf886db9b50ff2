"""Serve a hopstack pipeline file with Hayhooks (https://github.com/deepset-ai/hayhooks), one question a request.

The file is loaded as ``hopstack serve`` loads it (validated, ``--index`` applied to every retriever) and
answered by the same :class:`~hopstack.serve.ServedPipeline`, so ``/qa/run`` returns what ``POST /v1/answer``
returns; the files in yaml/ stay as they are. From the repository root:

    pip install -e ".[hayhooks]"
    HOPSTACK_HAYHOOKS_PIPELINE=yaml/hybrid.yaml HOPSTACK_INDEX=corpus.jsonl hayhooks run --pipelines-dir demos/hayhooks
    curl -s -X POST http://localhost:1416/qa/run -H 'Content-Type: application/json' \
         -d '{"question": "Who founded the Penhallow Ferry Company?", "top_k": 3}'

``HOPSTACK_HAYHOOKS_PIPELINE`` defaults to yaml/hybrid.yaml in the current folder (Hayhooks imports this file
from a temporary copy, so paths relative to it would not work), ``HOPSTACK_INDEX`` (an index folder from
``hopstack index`` or a corpus file) to the sample corpus that ships with hopstack. The answer is
``{"result": {"pipeline", "question", "documents": [{id, content, meta, score}], "answer", "timings"}}``.
"""

import os
import threading
from pathlib import Path

from hayhooks import BasePipelineWrapper

from hopstack.demo import SAMPLE_CORPUS
from hopstack.serve import Query, ServedPipeline


class PipelineWrapper(BasePipelineWrapper):
    def setup(self) -> None:
        file = Path(os.environ.get("HOPSTACK_HAYHOOKS_PIPELINE") or "yaml/hybrid.yaml").resolve()
        index = os.environ.get("HOPSTACK_INDEX") or str(SAMPLE_CORPUS)
        self.served = ServedPipeline(file.name, file, {"index": index})
        self.served.warm_up()  # load models and index now, not on the first request
        self.lock = threading.Lock()  # Hayhooks calls run_api from a thread pool; the models are shared

    def run_api(self, question: str, top_k: int | None = None) -> dict:
        """Answer one question with the hopstack pipeline: its documents, best first, and its answer.

        :param question: the question.
        :param top_k: documents to return (default: the pipeline's own number).
        """
        with self.lock:
            return self.served.answer([Query(question, top_k)])[0]
