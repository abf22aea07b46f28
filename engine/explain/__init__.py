"""Why the judge decided: attribution of one pairwise judgment to the sentences of its responses.

Modules: :mod:`.sentences` (the splitter), :mod:`.occlusion` (each sentence removed in turn, all variants in one
batched judge call; the sign convention, the "no signal" case and the deletion-curve faithfulness check are in
its docstring), :mod:`.inputs` (a run's pair, a labelled comparison, two given texts; the run's judge),
:mod:`.render` (the terminal view), :mod:`.errors`. ``cai explain`` and the review page's "explain" button use it.

:mod:`.saliency` (``cai explain --saliency``) is the finer view for judges on a local transformers model:
gradient x input per token of log P(A) - log P(B), both orders, and its rank correlation with occlusion;
occlusion works with every judge (language models on any scoring backend, panels, preference models) and needs
nothing of the model but its scores.
"""

from engine.explain.errors import ExplainError
from engine.explain.occlusion import Attribution, Sentence, explain, log_odds
from engine.explain.sentences import Span, split_sentences

__all__ = ["Attribution", "ExplainError", "Sentence", "Span", "explain", "log_odds", "split_sentences"]
