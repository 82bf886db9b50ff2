"""The dense part of an index: document embeddings and a FAISS index over them.

Kinds: ``flat`` (exact inner product, the default), ``hnsw`` (graph search; ``hnsw_m`` links a node,
``ef_search`` at query time) and ``ivf`` (inverted lists over k-means cells; ``ivf_nlist`` cells,
``nprobe`` at query time) for large corpora. Inner product on L2-normalised vectors is cosine.
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
    """Move a FAISS index to the GPU when ``device`` is CUDA and faiss was built with GPU support."""
    import faiss

    if device.startswith("cuda") and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        gpu = int(device.split(":")[1]) if ":" in device else 0
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), gpu, index)
    return index


def save_faiss(index, vectors: np.ndarray, folder: Path) -> None:
    """Write the index (``faiss.index``) and the embeddings (``embeddings.npy``) into ``folder``."""
    import faiss

    folder.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(folder / "faiss.index"))
    np.save(folder / "embeddings.npy", vectors, allow_pickle=False)


def load_embeddings(folder: Path) -> np.ndarray:
    """The embeddings :func:`save_faiss` wrote, one row per document, memory-mapped (read-only)."""
    return np.load(folder / "embeddings.npy", mmap_mode="r", allow_pickle=False)


def load_faiss(folder: Path):
    """Read the FAISS index that :func:`save_faiss` wrote."""
    import faiss

    return faiss.read_index(str(folder / "faiss.index"))
