"""Error types that the CLI maps to exit codes: bad input exits 2, anything else 1."""


class HopstackInputError(Exception):
    """Bad input from the user (a pipeline file, a questions file, an option): exit code 2."""


class PipelineRunError(RuntimeError):
    """A component failed while the batched runner executed it; names the component and the batch."""
