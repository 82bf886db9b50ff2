"""One LLM interface (:class:`hopstack.core.roles.LLM`) for every LLM-based stage.

``generate(prompts, max_tokens, temperature, stop, seed)`` returns one completion per prompt;
``score(prompts, candidates)`` returns, per prompt, the log-probability of each candidate continuation
(``yes``/``no``, digits ``0``-``10``, single-token identifiers, or longer strings);
``generate_scored(prompts, max_tokens)`` returns each prompt's greedy completion with the log-probability of
every token it chose (a reader's confidence in its answer). A prompt is either a
string, used as it is, or a list of chat messages ``{"role", "content"}``, rendered with the model's own
chat template and ending with the assistant's turn.

Backends: llama.cpp in process (:class:`LlamaCppLLM`, the CPU default) and transformers
(:class:`TransformersLLM`, the GPU path, batched). Models are loaded once per process and shared by
every component that names the same model; calls to one model are serialised by a lock (a llama.cpp
context, and a torch model's memory, are not for two threads at once).

Prompts longer than the context window are cut, never a crash: the prompt keeps its last
``n_ctx - max_tokens`` tokens (``n_ctx - 1`` when scoring), since the question and the answer cue come
last; :attr:`LlamaCppLLM.truncated` counts how often that happened.

:data:`USAGE` counts what the local backends did in this process (prompts, their tokens, tokens
generated, seconds), for cost reports (``benchmarks/reranker_cost.py``).
"""

import atexit
import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hopstack.core.roles import LLM
from hopstack.core.spec import build
from hopstack.models.registry import REGISTRY, resolve_model

Prompt = str | list[dict[str, str]]
Scored = tuple[str, list[float]]  # a greedy completion and the log-probability of each of its tokens


@dataclass
class LLMUsage:
    """Running totals of local LLM work: ``prompts`` sent to a model, ``prompt_tokens`` they held,
    ``evaluated_tokens`` the model actually ran over (less where llama.cpp reused a shared prefix),
    ``generated_tokens`` and model ``seconds`` (wall time inside the model calls)."""

    prompts: int = 0
    prompt_tokens: int = 0
    evaluated_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(
        self,
        prompts: int = 0,
        prompt_tokens: int = 0,
        evaluated: int | None = None,
        generated: int = 0,
        seconds: float = 0.0,
    ) -> None:
        """Add one call's work (``evaluated`` defaults to ``prompt_tokens``)."""
        with self._lock:
            self.prompts += prompts
            self.prompt_tokens += prompt_tokens
            self.evaluated_tokens += prompt_tokens if evaluated is None else evaluated
            self.generated_tokens += generated
            self.seconds += seconds

    def snapshot(self) -> dict[str, float]:
        """The totals so far, as a dict."""
        with self._lock:
            return {name: getattr(self, name) for name in USAGE_FIELDS}


USAGE_FIELDS = ("prompts", "prompt_tokens", "evaluated_tokens", "generated_tokens", "seconds")
USAGE = LLMUsage()

_MODELS: dict[tuple[str, int, bool], tuple[Any, threading.Lock]] = {}
_MODELS_LOCK = threading.Lock()


LLAMA_WITHOUT_AMX = (
    'CMAKE_ARGS="-DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8" '
    "pip install --force-reinstall --no-cache-dir --no-deps llama-cpp-python==0.3.36"
)
"""Rebuilds llama-cpp-python without llama.cpp's AMX int8 kernels (docs/concepts/llms.md#amx)."""


class LlamaBuildError(RuntimeError):
    """The installed llama.cpp build cannot run the model safely on this machine."""


def check_llama_build(system_info: str | None = None) -> None:
    """Refuse a llama.cpp built with its AMX int8 kernels (``AMX_INT8 = 1`` in llama.cpp's system info, read
    from the installed llama-cpp-python when ``system_info`` is None; a native build on an Intel CPU with AMX
    turns them on): in llama-cpp-python 0.3.36 they crash the process on the first prompt of more than one
    token (seen with the Qwen2.5 Q4_K_M GGUF; llama.cpp issue #20824), so hopstack stops with the command
    that builds llama.cpp without them."""
    if system_info is None:
        from llama_cpp import llama_print_system_info

        system_info = llama_print_system_info().decode(errors="replace")
    if "AMX_INT8 = 1" in system_info:
        raise LlamaBuildError(
            "llama-cpp-python was built with llama.cpp's AMX int8 kernels, which crash on this model's first "
            f"prompt (llama.cpp issue #20824); rebuild it without them: {LLAMA_WITHOUT_AMX}"
        )


def _load_llama(path: str, n_ctx: int, n_threads: int, flash_attn: bool):
    with _MODELS_LOCK:
        key = (path, n_ctx, flash_attn)
        if key not in _MODELS:
            from llama_cpp import Llama

            check_llama_build()
            llama = Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, flash_attn=flash_attn, verbose=False)
            _MODELS[key] = (llama, threading.Lock())
        return _MODELS[key]


@atexit.register
def _close_llama_models() -> None:
    """Free the llama.cpp models while the interpreter is whole: left to ``Llama.__del__`` at shutdown, the
    freeing runs after llama_cpp's own module has been torn down and prints a traceback per model."""
    with _MODELS_LOCK:
        for llama, _ in _MODELS.values():
            llama.close()
        _MODELS.clear()


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


class LlamaCppLLM:
    """llama.cpp in process.

    :param model: a registry name (``qwen2.5-0.5b``, ``smollm2-135m``) or a path to a GGUF file.
    :param n_ctx: the context window in tokens.
    :param n_threads: CPU threads (None: all cores; llama.cpp's own default uses half of them).
    :param flash_attn: llama.cpp's fused attention kernels, which llama.cpp's own tools use on a CPU by
        default: a 512-token prompt is read ~10% faster here (docs/concepts/llms.md#speed). Off by default:
        with it on, a greedy answer can change with the prefix reused from the prompt before, so a batch no
        longer answers exactly as one question at a time. The call cache keeps its answers apart.
    """

    def __init__(
        self, model: str = "qwen2.5-0.5b", n_ctx: int = 4096, n_threads: int | None = None, flash_attn: bool = False
    ):
        self.model = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.flash_attn = flash_attn
        self.truncated = 0
        self._llama = None
        self._lock: threading.Lock | None = None

    def warm_up(self) -> None:
        """Load the model (shared with every other user of the same model and context size)."""
        if self._llama is None:
            threads = self.n_threads or os.cpu_count() or 1
            self._llama, self._lock = _load_llama(resolve_model(self.model), self.n_ctx, threads, self.flash_attn)

    def render(self, prompt: Prompt) -> str:
        """The text the model sees: a string as it is, chat messages through the model's chat template."""
        if isinstance(prompt, str):
            return prompt
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.warm_up()
        template = self._llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"model {self.model!r} has no chat template; pass plain-text prompts")
        vocab = self._llama

        def token_text(token_id: int) -> str:
            return vocab.detokenize([token_id], special=True).decode("utf-8", errors="ignore")

        formatter = Jinja2ChatFormatter(
            template, eos_token=token_text(vocab.token_eos()), bos_token=token_text(vocab.token_bos())
        )
        return formatter(messages=prompt).prompt

    def _tokens(self, prompt: Prompt, budget: int) -> list[int]:
        tokens = self._llama.tokenize(self.render(prompt).encode("utf-8"), add_bos=True, special=True)
        if len(tokens) > budget:
            self.truncated += 1
            tokens = tokens[-budget:]
        return tokens

    def generate(
        self,
        prompts: Sequence[Prompt],
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int = 0,
    ) -> list[str]:
        """One completion per prompt, in turn (llama.cpp runs one sequence at a time)."""
        self.warm_up()
        outputs = []
        for prompt in prompts:
            with self._lock:
                started = time.perf_counter()
                tokens = self._tokens(prompt, max(1, self.n_ctx - max_tokens))
                result = self._llama.create_completion(
                    prompt=tokens, max_tokens=max_tokens, temperature=temperature, stop=list(stop or []), seed=seed
                )
                generated = result.get("usage", {}).get("completion_tokens", 0)
                USAGE.add(1, len(tokens), generated=generated, seconds=time.perf_counter() - started)
            outputs.append(result["choices"][0]["text"])
        return outputs

    def score(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[list[float]]:
        """Log-probability of each candidate continuing each prompt.

        Candidates are tokenised on their own (no BOS), so give them as they would follow the prompt
        (``"Yes"`` after a chat prompt, ``" yes"`` after ``"Answer:"``). Single-token candidates cost one
        forward pass per prompt; longer ones add one pass per continuation token (the prompt is evaluated once).
        A prompt that begins like the one scored before it only evaluates its new tokens.
        """
        self.warm_up()
        pieces = [self._llama.tokenize(c.encode("utf-8"), add_bos=False, special=False) for c in candidates]
        if any(not p for p in pieces):
            raise ValueError("every candidate must have at least one token")
        results = []
        for prompt in prompts:
            with self._lock:
                started = time.perf_counter()
                tokens = self._tokens(prompt, self.n_ctx - 1 - max(len(p) for p in pieces))
                results.append(self._score_one(tokens, pieces))
                USAGE.add(1, len(tokens), evaluated=self._evaluated, seconds=time.perf_counter() - started)
        return results

    def generate_scored(self, prompts: Sequence[Prompt], max_tokens: int = 32) -> list[Scored]:
        """Greedy completions with each chosen token's log-probability, decoded here token by token (the
        same argmax llama.cpp's greedy sampler takes; the prompt's prefix shared with the last one is reused).
        A completion ends at an end-of-generation token or after ``max_tokens``."""
        import llama_cpp

        self.warm_up()
        results = []
        for prompt in prompts:
            with self._lock:
                started = time.perf_counter()
                tokens = self._tokens(prompt, max(1, self.n_ctx - max_tokens))
                self._evaluate_prompt(tokens)
                chosen: list[int] = []
                log_probs: list[float] = []
                while len(chosen) < max_tokens:
                    distribution = self._last_log_probs()
                    token = int(np.argmax(distribution))
                    if llama_cpp.llama_vocab_is_eog(self._llama._model.vocab, token):
                        break
                    chosen.append(token)
                    log_probs.append(float(distribution[token]))
                    if len(chosen) < max_tokens:
                        self._llama.eval([token])
                text = self._llama.detokenize(chosen).decode("utf-8", errors="ignore")
                USAGE.add(
                    1, len(tokens), evaluated=self._evaluated, generated=len(chosen),
                    seconds=time.perf_counter() - started,
                )  # fmt: skip
            results.append((text, log_probs))
        return results

    def _last_log_probs(self) -> np.ndarray:
        """Log-probabilities of the next token after everything evaluated so far.

        Read from llama.cpp's own logits buffer (``llama_get_logits``): without ``logits_all``, which
        would keep a row per context position, llama-cpp-python does not copy them into ``scores``.
        """
        import llama_cpp

        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._llama.ctx), shape=(self._llama.n_vocab(),))
        return _log_softmax(logits.astype(np.float64))

    def _evaluate_prompt(self, tokens: list[int]) -> None:
        """Evaluate a prompt, keeping the KV cells of the prefix it shares with what was evaluated last
        (prompts that list the same documents and differ at the end cost only their ends); sets
        ``_evaluated``. At least two tokens are evaluated anew: llama.cpp computes a one-token batch with
        other kernels, whose logits differ by up to ~0.5 nats."""
        llama = self._llama
        evaluated = llama.input_ids[: llama.n_tokens].tolist()
        shared = next(
            (i for i, (a, b) in enumerate(zip(evaluated, tokens)) if a != b), min(len(evaluated), len(tokens))
        )
        llama.n_tokens = max(0, min(shared, len(tokens) - 2))
        self._evaluated = len(tokens) - llama.n_tokens
        llama.eval(tokens[llama.n_tokens :])

    def _score_one(self, tokens: list[int], pieces: list[list[int]]) -> list[float]:
        llama = self._llama
        self._evaluate_prompt(tokens)
        first = self._last_log_probs()
        scores = []
        for piece in pieces:
            total = float(first[piece[0]])
            if len(piece) > 1:
                llama.n_tokens = len(tokens)  # rewind to the prompt: eval drops the KV cells after it
                for previous, token in zip(piece, piece[1:]):
                    llama.eval([previous])
                    self._evaluated += 1
                    total += float(self._last_log_probs()[token])
            scores.append(total)
        return scores


_HF_MODELS: dict[tuple[str, str], tuple[Any, Any, threading.Lock]] = {}


def _load_transformers(path: str, device: str, dtype: str):
    with _MODELS_LOCK:
        key = (path, device)
        if key not in _HF_MODELS:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            # a GGUF file (a registry LLM) loads through transformers' GGUF support, de-quantised
            source, extra = (
                (str(Path(path).parent), {"gguf_file": Path(path).name}) if path.endswith(".gguf") else (path, {})
            )
            tokenizer = AutoTokenizer.from_pretrained(source, **extra)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
            torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **extra).to(device).eval()
            _HF_MODELS[key] = (tokenizer, model, threading.Lock())
        return _HF_MODELS[key]


class TransformersLLM:
    """Hugging Face transformers, batched: the GPU path.

    :param model: a Hugging Face id, a local folder with a causal LM and its tokenizer, or a GGUF file or
        registry LLM (loaded through transformers' GGUF support, de-quantised: slow on a CPU).
    :param device: ``auto | cpu | cuda | cuda:N``.
    :param dtype: ``auto`` or a torch dtype name (``float16``, ``bfloat16``, ``float32``).
    :param batch_size: prompts per forward pass.
    :param n_ctx: the context window used for truncation.
    """

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", batch_size: int = 8, n_ctx: int = 4096):
        self.model = model
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.n_ctx = n_ctx
        self.truncated = 0
        self._tokenizer = None
        self._model = None
        self._lock: threading.Lock | None = None

    def warm_up(self) -> None:
        """Load the tokenizer and model onto the device (shared per process)."""
        if self._model is None:
            from hopstack.models.devices import resolve_device

            self._tokenizer, self._model, self._lock = _load_transformers(
                resolve_model(self.model), resolve_device(self.device), self.dtype
            )

    @property
    def tokenizer(self):
        """The Hugging Face tokenizer (loaded on first use; shared per process, do not change it)."""
        self.warm_up()
        return self._tokenizer

    @contextlib.contextmanager
    def locked(self) -> Iterator[Any]:
        """The Hugging Face model, for the duration of the block alone in this process (its forward passes,
        generation and scoring wait); a setting the block changes on it must be restored before it ends."""
        self.warm_up()
        with self._lock:
            yield self._model

    def render(self, prompt: Prompt) -> str:
        """A string as it is; chat messages through the tokenizer's chat template."""
        if isinstance(prompt, str):
            return prompt
        self.warm_up()
        if not self._tokenizer.chat_template:
            raise ValueError(f"model {self.model!r} has no chat template; pass plain-text prompts")
        return self._tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def _ids(self, prompt: Prompt, budget: int) -> list[int]:
        ids = self._tokenizer(self.render(prompt), add_special_tokens=True)["input_ids"]
        if len(ids) > budget:
            self.truncated += 1
            ids = ids[-budget:]
        return ids

    def _left_padded(self, rows: list[list[int]]):
        import torch

        width = max(len(r) for r in rows)
        pad = self._tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self._model.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self._model.device)
        return ids, mask

    def generate(
        self,
        prompts: Sequence[Prompt],
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int = 0,
    ) -> list[str]:
        """Completions in batches of ``batch_size`` (left-padded); text is cut at the first stop string."""
        outputs: list[str] = []
        for new, _ in self._generate_batches(prompts, max_tokens, temperature, seed, scored=False):
            for row in new:
                text = self._tokenizer.decode(row, skip_special_tokens=True)
                for marker in stop or []:
                    text = text.split(marker, 1)[0]
                outputs.append(text)
        return outputs

    def generate_scored(self, prompts: Sequence[Prompt], max_tokens: int = 32) -> list[Scored]:
        """Greedy completions in batches, with each chosen token's log-probability (up to the first
        end-of-sequence token)."""
        ends = self._model_end_tokens()
        results: list[Scored] = []
        for new, log_probs in self._generate_batches(prompts, max_tokens, 0.0, 0, scored=True):
            for row, row_log_probs in zip(new.tolist(), log_probs.tolist()):
                length = next((i for i, token in enumerate(row) if token in ends), len(row))
                text = self._tokenizer.decode(row[:length], skip_special_tokens=True)
                results.append((text, [float(v) for v in row_log_probs[:length]]))
        return results

    def _model_end_tokens(self) -> set[int]:
        self.warm_up()
        ends = self._model.generation_config.eos_token_id
        ends = set(ends if isinstance(ends, list) else [ends] if ends is not None else [])
        return (ends | {self._tokenizer.pad_token_id, self._tokenizer.eos_token_id}) - {None}

    def _generate_batches(
        self, prompts: Sequence[Prompt], max_tokens: int, temperature: float, seed: int, scored: bool
    ):
        """Per batch of prompts, the generated token ids (rows) and, when ``scored``, their log-probabilities."""
        import torch

        self.warm_up()
        for start in range(0, len(prompts), self.batch_size):
            rows = [self._ids(p, max(1, self.n_ctx - max_tokens)) for p in prompts[start : start + self.batch_size]]
            ids, mask = self._left_padded(rows)
            started = time.perf_counter()
            with self._lock, torch.inference_mode():
                torch.manual_seed(seed)
                generated = self._model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=max_tokens,
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=self._tokenizer.pad_token_id,
                    output_scores=scored,
                    return_dict_in_generate=True,
                )
                log_probs = (
                    self._model.compute_transition_scores(generated.sequences, generated.scores, normalize_logits=True)
                    if scored
                    else None
                )
            new = generated.sequences[:, ids.shape[1] :]
            USAGE.add(
                len(rows), sum(map(len, rows)), generated=int((new != self._tokenizer.pad_token_id).sum()),
                seconds=time.perf_counter() - started,
            )  # fmt: skip
            yield new, log_probs

    def score(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[list[float]]:
        """Log-probability of each candidate after each prompt, prompts batched; candidates are
        tokenised on their own (no special tokens)."""
        self.warm_up()
        pieces = [self._tokenizer(c, add_special_tokens=False)["input_ids"] for c in candidates]
        if any(not p for p in pieces):
            raise ValueError("every candidate must have at least one token")
        longest = max(len(p) for p in pieces)
        results: list[list[float]] = []
        for start in range(0, len(prompts), self.batch_size):
            rows = [self._ids(p, self.n_ctx - longest) for p in prompts[start : start + self.batch_size]]
            if longest == 1:  # one forward pass: the last position's distribution scores every candidate
                log_probs = self._log_probs(rows)[:, -1, :]
                results.extend([[float(log_probs[r, p[0]]) for p in pieces] for r in range(len(rows))])
                continue
            scores = [[0.0] * len(pieces) for _ in rows]
            for c, piece in enumerate(pieces):
                log_probs = self._log_probs([row + piece for row in rows])
                width = log_probs.shape[1]
                for r in range(len(rows)):
                    for j, token in enumerate(piece):
                        position = width - len(piece) - 1 + j  # the logits that predict piece[j]
                        scores[r][c] += float(log_probs[r, position, token])
            results.extend(scores)
        return results

    def _log_probs(self, rows: list[list[int]]):
        """Next-token log-probabilities at every position of left-padded rows (positions count from each
        row's first real token, so a row scores the same alone or in a batch)."""
        import torch

        ids, mask = self._left_padded(rows)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        started = time.perf_counter()
        with self._lock, torch.inference_mode():
            logits = self._model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
        USAGE.add(len(rows), sum(map(len, rows)), seconds=time.perf_counter() - started)
        return torch.log_softmax(logits, dim=-1)


class LLMServerError(RuntimeError):
    """An OpenAI-compatible server could not be reached or kept failing after the retries."""


class OpenAICompatibleLLM:
    """Any OpenAI-compatible server (vLLM, llama.cpp server, Ollama), through the ``openai`` client.

    Requests for a batch are sent concurrently (``concurrency`` at a time); the client retries failed
    or timed-out requests ``max_retries`` times with exponential backoff, then a clear error names the
    server. ``score`` asks for one generated token with its ``top_logprobs`` and reads each candidate's
    first token there: a candidate outside the returned top ``logprobs`` gets the lowest returned value
    (an upper bound), and multi-token candidates are scored by their first token only; servers do not
    return prompt log-probabilities uniformly, so that is what this backend can offer.

    The API key comes from the environment variable ``api_key_env``, read when the client is made, so that no
    pipeline file needs to hold it (``api_key`` in the file also works, but files get shared). Without a key,
    requests carry no ``Authorization`` header (a llama.cpp or vLLM server started without ``--api-key``
    needs none); a server that answers 401 gets an error that names the variable.

    :param base_url: e.g. ``http://127.0.0.1:8000/v1``.
    :param model: the model name the server knows.
    :param api_key_env: the environment variable holding the server's API key.
    :param api_key: a key written into the file itself (``api_key_env`` is the better place: files are shared).
    """

    def __init__(
        self,
        base_url: str,
        model: str = "default",
        api_key_env: str = "OPENAI_API_KEY",
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 8,
        logprobs: int = 20,
    ):
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.logprobs = logprobs
        self.n_ctx = None  # the server owns its context window and truncation
        self._client = None
        self._headers: dict[str, Any] = {}
        self._key_source: str | None = None

    def warm_up(self) -> None:
        """Create the client with the key from ``$api_key_env`` (no request is sent)."""
        if self._client is None:
            import openai

            key, self._key_source = self.api_key, "the llm spec's api_key"
            if not key:
                key, self._key_source = os.environ.get(self.api_key_env), f"${self.api_key_env}"
            if not key:
                self._key_source = None
            # the client insists on a key; without one, each request leaves the Authorization header out
            self._headers = {} if key else {"Authorization": openai.Omit()}
            self._client = openai.OpenAI(
                base_url=self.base_url, api_key=key or "none", timeout=self.timeout, max_retries=self.max_retries
            )

    def _map(self, function, items: Sequence[Any]) -> list:
        from concurrent.futures import ThreadPoolExecutor

        import openai

        self.warm_up()
        try:
            with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
                return list(pool.map(function, items))
        except openai.AuthenticationError as exc:
            needs = (
                f"refused the key in {self._key_source}"
                if self._key_source
                else f"needs an API key: set ${self.api_key_env} (the llm spec's api_key_env) to it"
            )
            raise LLMServerError(f"LLM server {self.base_url} {needs} (HTTP {exc.status_code})") from exc
        except (openai.APIConnectionError, openai.APITimeoutError, openai.APIStatusError) as exc:
            raise LLMServerError(
                f"LLM server {self.base_url} failed after {self.max_retries} retries: {type(exc).__name__}: {exc}"
            ) from exc

    def _complete(self, prompt: Prompt, **params: Any):
        params["extra_headers"] = self._headers
        if isinstance(prompt, str):
            return self._client.completions.create(model=self.model, prompt=prompt, **params).choices[0]
        return self._client.chat.completions.create(model=self.model, messages=prompt, **params).choices[0]

    def generate(
        self,
        prompts: Sequence[Prompt],
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int = 0,
    ) -> list[str]:
        """One completion per prompt, requested concurrently."""

        def one(prompt: Prompt) -> str:
            choice = self._complete(
                prompt, max_tokens=max_tokens, temperature=temperature, stop=list(stop or []) or None, seed=seed
            )
            return choice.text if isinstance(prompt, str) else (choice.message.content or "")

        return self._map(one, prompts)

    def generate_scored(self, prompts: Sequence[Prompt], max_tokens: int = 32) -> list[Scored]:
        """Greedy completions with the log-probabilities the server reports for their tokens."""

        def one(prompt: Prompt) -> Scored:
            if isinstance(prompt, str):
                choice = self._complete(prompt, max_tokens=max_tokens, temperature=0.0, logprobs=1)
                return choice.text, [float(v) for v in choice.logprobs.token_logprobs]
            choice = self._complete(prompt, max_tokens=max_tokens, temperature=0.0, logprobs=True, top_logprobs=1)
            return choice.message.content or "", [float(entry.logprob) for entry in choice.logprobs.content or []]

        return self._map(one, prompts)

    def score(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[list[float]]:
        """Candidates' log-probabilities from the top log-probabilities of one generated token."""

        def one(prompt: Prompt) -> list[float]:
            if isinstance(prompt, str):
                choice = self._complete(prompt, max_tokens=1, temperature=0.0, logprobs=self.logprobs)
                top = dict(choice.logprobs.top_logprobs[0])
            else:
                choice = self._complete(
                    prompt, max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=self.logprobs
                )
                top = {entry.token: entry.logprob for entry in choice.logprobs.content[0].top_logprobs}
            floor = min(top.values())
            return [_candidate_log_prob(c, top, floor) for c in candidates]

        return self._map(one, prompts)


def _candidate_log_prob(candidate: str, top: dict[str, float], floor: float) -> float:
    """A candidate's log-probability among a server's top tokens: the candidate itself, else its longest
    returned prefix (its likely first token), else ``floor``."""
    if candidate in top:
        return top[candidate]
    prefixes = [token for token in top if token and candidate.startswith(token)]
    return top[max(prefixes, key=len)] if prefixes else floor


def llm_spec(spec: str | dict[str, Any]) -> dict[str, Any]:
    """An ``llm`` init parameter as a nested spec ``{type, init_parameters}``. A bare model name is short for
    llama.cpp (registry names and ``.gguf`` files) or transformers (any other Hugging Face id or path)."""
    if isinstance(spec, str):
        backend = "llama.cpp" if spec in REGISTRY or spec.lower().endswith(".gguf") else "transformers"
        return {"type": backend, "init_parameters": {"model": spec}}
    if isinstance(spec, dict) and "backend" in spec:
        raise ValueError(
            "llm: {backend: ...} is no longer read; write {type: BACKEND, init_parameters: {...}}, e.g. "
            "{type: openai, init_parameters: {base_url: ..., model: ...}}"
        )
    return spec


def make_llm(spec: str | dict[str, Any]) -> LLM:
    """An LLM from a component's JSON-safe ``llm`` init parameter: a model name (see :func:`llm_spec`) or a
    nested spec ``{type: llama.cpp | transformers | openai | CLASS_PATH, init_parameters}``, e.g.
    ``{type: openai, init_parameters: {base_url: "http://127.0.0.1:8000/v1", model: qwen}}``."""
    return build(llm_spec(spec), "llm", role=LLM)
