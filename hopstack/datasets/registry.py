"""Dataset names and where their local copies live.

A name resolves under ``$HOPSTACK_DATA`` when set, else under the ``shared/data`` folder beside the
repository (where this project's machines keep the benchmark copies). A path to a dataset folder works
wherever a name does.
"""

from pathlib import Path

from hopstack.core.settings import DATA_ENV_VAR, data_home
from hopstack.errors import HopstackInputError

# name -> its folder under the data root
DATASETS: dict[str, str] = {
    "multihop-rag": "multihop_rag",
    "2wikimultihopqa": "2wikimultihopqa",
    "scifact": "scifact",
    "strategyqa": "strategyqa",
}


def data_root() -> Path:
    """Where dataset names are looked up."""
    if data_home() is not None:
        return data_home()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def resolve_dataset(name_or_path: str) -> tuple[str, Path]:
    """``(name, path)``: a known name and its local folder, or an existing path named after its folder or
    file (its stem); anything else is refused, listing the known names."""
    if name_or_path in DATASETS:
        folder = data_root() / DATASETS[name_or_path]
        if not folder.is_dir():
            raise HopstackInputError(
                f"dataset {name_or_path!r} not found at {folder}; set ${DATA_ENV_VAR} or pass the dataset's folder"
            )
        return name_or_path, folder
    path = Path(name_or_path).expanduser()
    if not path.exists():
        known = ", ".join(DATASETS)
        raise HopstackInputError(
            f"unknown dataset {name_or_path!r}: give one of {known}, or a dataset folder or file that exists"
        )
    return (path.name if path.is_dir() else path.stem), path
