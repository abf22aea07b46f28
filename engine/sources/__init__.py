"""The prompts a critique run starts from: prompt sets, read from builtins, files or datasets.

A prompt set is a list of :class:`PromptItem`: a chat that ends with a user turn,
a stable id (runs resume and deduplicate by it) and, when known, the taxonomy
category and the kind of request. :func:`load_prompts` reads them from

* the builtin sets ``redteam`` and ``helpful`` (also ``builtin:redteam``), and
  ``mixed``, the two interleaved, and the held-out evaluation sets
  ``eval-redteam`` and ``eval-benign`` (a bare builtin name always means the
  builtin: write ``./redteam`` for a file or folder of that name);
* a ``.jsonl``, ``.json`` (a list of rows), ``.csv`` (with a header row) or
  ``.txt`` (one prompt per non-empty line) file;
* a folder written by ``datasets``' ``save_to_disk`` (``PATH`` or ``PATH:SPLIT``,
  split ``train`` by default), or a hub dataset as ``hf:NAME[:SPLIT]``.

Each row is read with the first layout that fits: a ``messages`` chat; a
``prompt`` string or chat; or a ``Human:``/``Assistant:`` transcript in a
``transcript``, ``chosen``, ``text`` or ``prompt`` column (the format of the
well-known red-team and harmlessness datasets). A final assistant turn is a
response, not part of the prompt, and is dropped.

Rows are checked as they are read: an explicit ``id`` may appear only once in
a set (a row without one gets an id derived from its conversation), and a
``category`` (or ``tag``) must be a tag of the taxonomy
(:mod:`constitution.taxonomy`), ``kind`` one of :data:`KINDS`.

``limit=N`` takes a seeded sample of N prompts spread over the kinds and, within
each kind, over the categories (see :func:`sample_ids`), not the first N rows:
the first rows of a set are often all of one category.

For large sets, :func:`open_prompts` checks the whole source up front, keeping
no prompt, and then reads it again as it is iterated, so memory stays flat in
the number of prompts; :func:`load_prompts` returns a list.

``datasets`` and ``pyarrow`` are imported only when a dataset is loaded, so
importing this package stays fast.

Modules, in the order a prompt passes through them: :mod:`.load` (which source
a name means, and the three loaders), :mod:`.builtin`, :mod:`.files` and
:mod:`.hub` (the kinds of source), :mod:`.readers` (reading a source again and
again), :mod:`.rows` (checking one row, and ids), :mod:`.layouts` (the row
layouts and transcripts), :mod:`.sampling` (``limit``), :mod:`.items` (the
:class:`PromptItem` type and :class:`PromptSetError`).
"""

from engine.sources.builtin import BUILTIN_DIR, BUILTIN_SETS, EVAL_DIR
from engine.sources.files import FILE_SUFFIXES
from engine.sources.items import CATEGORIES, KINDS, PromptItem, PromptSetError
from engine.sources.layouts import LAYOUTS, parse_transcript
from engine.sources.load import PromptSet, PromptStream, load_prompt_set, load_prompts, open_prompts
from engine.sources.sampling import sample_ids

__all__ = [
    "BUILTIN_DIR",
    "BUILTIN_SETS",
    "CATEGORIES",
    "EVAL_DIR",
    "FILE_SUFFIXES",
    "KINDS",
    "LAYOUTS",
    "PromptItem",
    "PromptSet",
    "PromptSetError",
    "PromptStream",
    "load_prompt_set",
    "load_prompts",
    "open_prompts",
    "parse_transcript",
    "sample_ids",
]
