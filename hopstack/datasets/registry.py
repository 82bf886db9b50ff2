"""Dataset names and where their local copies live.

A name resolves under ``$HOPSTACK_DATA`` when set, else under the ``shared/data`` folder beside the
repository (where this project's machines keep the benchmark copies). A path to a dataset folder works
wherever a name does.
"""

import os
from pathlib import Path

from hopstack.errors import HopstackInputError

DATA_ENV_VAR = "HOPSTACK_DATA"

# name -> (folder under the data root, corpus file inside it)
DATASETS: dict[str, tuple[str, str]] = {
    "multihop-rag": ("multihop_rag", "corpus.json"),
    "2wikimultihopqa": ("2wikimultihopqa", "2wiki_dev_subset.json"),
    "scifact": ("scifact", "corpus.jsonl"),
}


def data_root() -> Path:
    """Where dataset names are looked up."""
    if os.environ.get(DATA_ENV_VAR):
        return Path(os.environ[DATA_ENV_VAR]).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def resolve_dataset(name_or_path: str) -> tuple[str, Path]:
    """``(dataset name, its folder)`` for a known name or a folder that holds a known dataset's files."""
    if name_or_path in DATASETS:
        folder = data_root() / DATASETS[name_or_path][0]
        if not folder.is_dir():
            raise HopstackInputError(
                f"dataset {name_or_path!r} not found at {folder}; set ${DATA_ENV_VAR} or pass the dataset's folder"
            )
        return name_or_path, folder
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        for name, (_, corpus) in DATASETS.items():
            if (path / corpus).is_file():
                return name, path
    known = ", ".join(DATASETS)
    raise HopstackInputError(f"unknown dataset {name_or_path!r}: give one of {known} or a folder holding one")


def dataset_corpus(name_or_path: str) -> Path:
    """The corpus file of a dataset, for ``hopstack index --dataset``."""
    name, folder = resolve_dataset(name_or_path)
    return folder / DATASETS[name][1]
