"""What the rules are: the principle file format, loading and composition.

>>> import constitution
>>> c = constitution.load("default")
>>> len(c.content_hash)
64

No model code lives here; ``engine`` applies the rules.
"""

from constitution.errors import ConstitutionError, Problem, UserError
from constitution.loader import builtin_names, dump, iter_files, load
from constitution.schema import SCHEMA_VERSION, Constitution, Example, Message, Principle, json_schema
from constitution.taxonomy import HARM_TAGS, QUALITY_TAGS, TAGS

__all__ = [
    "HARM_TAGS",
    "QUALITY_TAGS",
    "SCHEMA_VERSION",
    "TAGS",
    "Constitution",
    "ConstitutionError",
    "Example",
    "Message",
    "Principle",
    "Problem",
    "UserError",
    "builtin_names",
    "dump",
    "iter_files",
    "json_schema",
    "load",
]
