"""The contracts every other layer of hopstack builds on, and nothing above them.

- :mod:`hopstack.core.settings`: environment settings ($HOPSTACK_HOME, the cache switch, $HOPSTACK_INDEX, ...).
- :mod:`hopstack.core.text`: the text a stage reads for a document, prompts' passage lists, answer normalisation.
- :mod:`hopstack.core.ranking`: scored copies of documents, min-max scaling, top-k selection and reordering.
- :mod:`hopstack.core.spec`: the one nested-spec form ``{type, init_parameters}`` and the module allowlist.
- :mod:`hopstack.core.roles`: the roles (Protocols) that the runner, metrics and service ask components about.
- :mod:`hopstack.core.outputs`: what a pipeline returns for one question (documents, answer, clues, trace).

Imports go one way: ``core`` <- ``models`` <- ``index`` <- ``datasets`` <- ``components`` <- ``graphs`` <- ``spec``
<- ``experiments`` <- ``serve``, ``cli`` (tests/test_layers.py holds it).
"""
