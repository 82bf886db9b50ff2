"""Error types that the CLI maps to exit codes: bad input exits 2, anything else 1."""


class HopstackInputError(Exception):
    """Bad input from the user (a pipeline file, a questions file, an option): exit code 2."""


class ComponentInputError(HopstackInputError):
    """Bad input that a component found while warming up (a missing index, an index embedded with another
    model); ``node`` names the component in its pipeline."""

    def __init__(self, message: str, node: str):
        super().__init__(message)
        self.node = node


class PipelineRunError(RuntimeError):
    """A component failed while the batched runner executed it; names the component and the batch.
    ``node`` is the component's name in its pipeline (None when the failure is not one node's)."""

    def __init__(self, message: str, node: str | None = None):
        super().__init__(message)
        self.node = node
