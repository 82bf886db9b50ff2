"""The dense part of an index: document embeddings and a FAISS index over them.

Kinds: ``flat`` (exact inner product, the default), ``hnsw`` (graph search; ``hnsw_m`` links a node,
``ef_search`` at query time) and ``ivf`` (inverted lists over k-means cells; ``ivf_nlist`` cells,
``nprobe`` at query time) for large corpora. Inner product on L2-normalised vectors is cosine.

A dense part may be cut into ``shards``: FAISS indexes over contiguous row ranges, built one at a time (the
build holds one shard's vectors, the embeddings stream into a memory-mapped file) and searched together as one
``faiss.IndexShards`` whose ids are the rows. Shards are read memory-mapped: an IVF shard's inverted lists stay
on disk until a search reads them (docs/concepts/scale-out.md#sharded-dense-index).
"""

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

FAISS_KINDS = ("flat", "hnsw", "ivf")


@dataclass(frozen=True)
class DenseSettings:
    """How the corpus was embedded and indexed; a retriever must ask for the same embedder."""

    model: str = "minilm"
    normalize: bool = True
    faiss: str = "flat"
    hnsw_m: int = 32
    ivf_nlist: int = 0  # 0: about 4 * sqrt(number of vectors)
    backend: str = "torch"  # the embedder's backend (hopstack.models.onnx_backend); the manifest records the one used
    shards: int = 1  # FAISS indexes over contiguous row ranges, searched together

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_faiss(vectors: np.ndarray, settings: DenseSettings):
    """A FAISS inner-product index of the given kind over ``vectors`` (float32, one row a document)."""
    import faiss

    if settings.faiss not in FAISS_KINDS:
        raise ValueError(f"faiss index kind must be one of {', '.join(FAISS_KINDS)}; got {settings.faiss!r}")
    dim = vectors.shape[1]
    if settings.faiss == "flat":
        index = faiss.IndexFlatIP(dim)
    elif settings.faiss == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        nlist = settings.ivf_nlist or max(1, int(4 * np.sqrt(len(vectors))))
        nlist = min(nlist, len(vectors))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
    index.add(vectors)
    return index


def search_parameters(index, ef_search: int, nprobe: int):
    """The query-time breadth of an HNSW (``efSearch``) or IVF (``nprobe``) index as FAISS search
    parameters, ``None`` for a flat index; ``index.search(x, k, params=...)`` applies them to that call
    only, so readers of a shared index may search it with different settings."""
    import faiss

    if isinstance(index, faiss.IndexShards):  # searched with its shards' parameters, passed on to each
        index = faiss.downcast_index(index.at(0))
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(efSearch=max(ef_search, 1))
    if faiss.try_extract_index_ivf(index) is not None:
        return faiss.SearchParametersIVF(nprobe=max(nprobe, 1))
    return None


def configure_search(index, ef_search: int, nprobe: int) -> None:
    """Set the query-time breadth of an HNSW or IVF index of one's own on the index itself (a shared
    index is searched with :func:`search_parameters` instead)."""
    import faiss

    params = search_parameters(index, ef_search, nprobe)
    if isinstance(params, faiss.SearchParametersHNSW):
        index.hnsw.efSearch = params.efSearch
    elif params is not None:
        faiss.extract_index_ivf(index).nprobe = params.nprobe


def to_device(index, device: str):
    """Move a FAISS index to the GPU when ``device`` is CUDA and faiss was built with GPU support (a sharded
    index stays on the CPU, where its shards are memory-mapped)."""
    import faiss

    if isinstance(index, faiss.IndexShards):
        return index
    if device.startswith("cuda") and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        gpu = int(device.split(":")[1]) if ":" in device else 0
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), gpu, index)
    return index


def shard_rows(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous, near-equal ``(start, end)`` row ranges over ``n`` rows (fewer when ``n`` is smaller)."""
    bounds = np.linspace(0, n, max(1, min(shards, n)) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def shard_file(number: int, shards: int) -> str:
    """The file of shard ``number``: ``faiss.index`` for an unsharded index, else ``faiss-000.index``, ..."""
    return "faiss.index" if shards == 1 else f"faiss-{number:03d}.index"


class EmbeddingsFile:
    """``embeddings.npy`` of ``rows`` float32 rows written as they are computed, memory-mapped (created with the
    first rows, whose width it takes), so that a build never holds every embedding in memory."""

    def __init__(self, path: Path, rows: int):
        self.path = path
        self.rows = rows
        self.array: np.ndarray | None = None

    def write(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` as row ``rows[i]``."""
        if self.array is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            shape = (self.rows, vectors.shape[1])
            self.array = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=shape)
        self.array[rows] = vectors

    def finish(self) -> np.ndarray:
        """Flush the file; returns it memory-mapped."""
        if self.array is None:
            raise ValueError("no embedding was written")
        self.array.flush()
        return self.array


def write_faiss(vectors: np.ndarray, settings: DenseSettings, folder: Path) -> int:
    """Build and write the FAISS index of ``vectors`` into ``folder``, as ``settings.shards`` shards over contiguous
    row ranges (:func:`shard_file`), one shard in memory at a time; returns the number of shards written."""
    import faiss

    ranges = shard_rows(len(vectors), settings.shards)
    for number, (start, end) in enumerate(ranges):
        shard = build_faiss(np.ascontiguousarray(vectors[start:end], dtype=np.float32), settings)
        faiss.write_index(shard, str(folder / shard_file(number, len(ranges))))
    return len(ranges)


def load_embeddings(folder: Path) -> np.ndarray:
    """The embeddings :func:`save_faiss` wrote, one row per document, memory-mapped (read-only)."""
    return np.load(folder / "embeddings.npy", mmap_mode="r", allow_pickle=False)


def load_faiss(folder: Path, shards: int = 1):
    """Read the FAISS index that :func:`write_faiss` wrote; several shards as one ``faiss.IndexShards`` (ids: the
    rows), each read memory-mapped."""
    import faiss

    if shards == 1:
        return faiss.read_index(str(folder / shard_file(0, 1)))
    parts = [faiss.read_index(str(folder / shard_file(i, shards)), faiss.IO_FLAG_MMAP) for i in range(shards)]
    index = faiss.IndexShards(parts[0].d, False, True)  # not threaded; successive ids: shard i starts after i - 1
    for part in parts:
        index.add_shard(part)  # faiss's Python wrapper keeps each shard alive as long as the index
    return index
