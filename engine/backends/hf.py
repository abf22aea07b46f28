"""A transformers backend: any causal LM with a chat template, on CPU or CUDA.

Batching
    Requests are sorted by prompt length (in tokens; when scoring with shared
    prefixes, by the length of each one's own part) and cut into batches of ``batch_size``
    within ``max_batch_tokens``, so a batch holds prompts of similar length and
    little padding. Each batch is left-padded (the new tokens of every row start at
    the same column) and position ids follow the attention mask, so a padded
    row sees exactly what it would see alone. Results come back in the order
    of the requests.

Sampling
    ``temperature == 0`` is greedy decoding. Otherwise the sampler is seeded
    with ``torch.manual_seed(params.seed)`` at the start of each ``generate``
    call (inside ``torch.random.fork_rng``, so the caller's global RNG is left
    alone). Sampled output is reproducible for the same requests, batch size,
    dtype and device: the random stream is shared by the batches in order, so a
    different batch composition draws different samples. Sampling uses only
    ``temperature`` and ``top_p`` (no top-k, no repetition penalty, whatever the
    model's ``generation_config.json`` says), so :class:`SamplingParams` fully
    describes it.

Scoring
    ``score`` computes log P(option | chat + generation prompt) as the sum of the
    option tokens' log-probabilities; it never generates. Each prompt runs once
    (batched, left-padded) and all its options continue from the prompt's
    key/value cache in one more short pass, so judging between (A) and (B)
    costs one prompt pass, not two.

Shared prefixes
    In ``generate`` and ``score`` alike, a token prefix that several prompts
    of one call share (the judge's instructions and a trajectory's
    conversation, the critic's principle and examples, the system prompt)
    runs once for the whole call; each prompt continues from its keys and
    values (:mod:`engine.backends.prefix`, :mod:`engine.backends.kv_cache`).
    Heads are kept from call to call within ``max_head_tokens`` (``heads``):
    a principle's part of the critique prompt runs once per run, not once per
    round. ``prompt_tokens`` counts what was asked for and what was computed.

Longer than 500 lines: generation and scoring run through one set of
prompt, head and cache passes (``_plans``, ``_head_kv``, ``_with_heads``,
``_forward``); split apart, they would need a private interface of their own.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
from typing import Any, cast

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteriaList,
    StopStringCriteria,
)

from engine.backends.base import (
    Backend,
    BackendError,
    Chat,
    Completion,
    SamplingParams,
    ScoreRequest,
    first_line,
    locate_model,
)
from engine.backends.decode_attention import use_packed_decoding
from engine.backends.kv_cache import HeadCache, HeadKV, HeadStore, cache_of, roomy_cache, row_kv, stack_heads
from engine.backends.prefix import (
    MAX_DEPTH,
    NO_TOKENS,
    Plan,
    count,
    plan_batches,
    shared_heads,
    waves,
)
from engine.backends.tokens import continuation_ids, cut_at_stop, render_chat
from engine.backends.torch_device import (
    CPU_BATCH_TOKENS,
    CPU_DECODE_TOKENS,
    kv_token_budget,
    resolve_device,
    resolve_dtype,
)
from engine.records.run import PromptTokenCount

_LOGITS_BUDGET = 1 << 27
"""Most logits (elements) one scoring pass keeps: 512 MiB in fp32."""


def _token_ids(value: object) -> set[int]:
    """A token id or a list of them (as configs write ``eos_token_id``) as a set."""
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    return {int(v) for v in cast(Sequence[int], value)}


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' per-load progress bars (the CLI prints its own progress)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


class HFBackend(Backend):
    """A causal LM loaded with transformers (a local folder or a hub id).

    Args:
        model: A model folder or a Hugging Face hub id.
        name: Name recorded in provenance (default: ``model``).
        batch_size: Most sequences one ``generate`` / forward call takes.
        max_batch_tokens: Most padded prompt tokens one forward pass over prompts takes (a longer prompt
            goes alone). None: 4096 on the CPU (prefill-bound: wider passes ran slower per token); on a GPU,
            what a quarter of the free memory holds as KV cache (decoding is launch-bound there, so wide
            batches win: measured on an H100, 4096 made the pipeline's long prompts 4.8x slower).
        max_decode_tokens: Most padded tokens (whole prompts) in one decoding batch; its prompt passes
            still take at most ``max_batch_tokens`` each. None: ``CPU_DECODE_TOKENS`` on the CPU (a
            decoding step reads every weight once whatever the batch, so more rows per step win there
            too), ``max_batch_tokens`` on a GPU.
        dtype: ``auto`` (bf16 where the hardware computes it natively, else
            fp32), ``bfloat16``, ``float16`` or ``float32``.
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N``.
        prefix_reuse: Run a token prefix that prompts of one call share once
            (:mod:`engine.backends.prefix`) and keep it for later calls; False
            runs every prompt whole.

    Raises:
        BackendError: The model or its tokenizer cannot be loaded, or the
            tokenizer has no chat template.
    """

    def __init__(
        self,
        model: str,
        *,
        name: str | None = None,
        batch_size: int = 16,
        max_batch_tokens: int | None = None,
        max_decode_tokens: int | None = None,
        dtype: str = "auto",
        device: str = "auto",
        prefix_reuse: bool = True,
    ) -> None:
        if batch_size < 1:
            raise BackendError(f"batch_size must be at least 1, not {batch_size}")
        self.model_ref = model
        self.name = name or model
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        source = locate_model(model)
        self.tokenizer = self._load_tokenizer(source)
        self.model = self._load_model(source)
        self.max_batch_tokens = max_batch_tokens or self._token_budget()
        self.max_decode_tokens = max_decode_tokens or (
            self.max_batch_tokens if self.device.type == "cuda" else max(CPU_DECODE_TOKENS, self.max_batch_tokens)
        )
        self.max_head_tokens = self._head_budget()
        """Most tokens of shared heads whose keys and values one call holds at a time, and :attr:`heads` holds."""
        self.heads = HeadCache(self.max_head_tokens)
        """Heads kept from call to call (keyed by token ids: clear it if the model's weights change)."""
        # A reply ends at its first end-of-text token, or where padding starts (finished rows are padded).
        self._ends = torch.tensor(sorted(self._eos_ids | {self._pad_id}))
        params = inspect.signature(self.model.forward).parameters
        self._takes_positions = "position_ids" in params
        self._takes_logits_to_keep = "logits_to_keep" in params
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5
        # Sharing a prefix puts padding between it and each row's own tokens: positions must be given;
        # heads are stacked into a plain cache, which a sliding-window layer would cut.
        layer_types = getattr(self.model.config, "layer_types", None) or ["full_attention"]
        self.prefix_reuse = prefix_reuse and self._takes_positions and set(layer_types) == {"full_attention"}
        self.prompt_tokens = NO_TOKENS
        """Prompt tokens requested and computed since loading (or since the caller reset it)."""
        self._stop_cache: dict[tuple[str, ...], StopStringCriteria] = {}
        self._vocab_size = int(getattr(self.model.config, "vocab_size", None) or len(self.tokenizer))

    # ----------------------------------------------------------------- loading

    def _load_tokenizer(self, source: str) -> PreTrainedTokenizerBase:
        try:
            with _quiet_loading():
                tokenizer = AutoTokenizer.from_pretrained(source)
        except Exception as exc:
            raise BackendError(f"{self.model_ref}: cannot load the tokenizer: {first_line(exc)}") from None
        if not getattr(tokenizer, "chat_template", None):
            raise BackendError(
                f"{self.model_ref}: the tokenizer has no chat template; use an instruction-tuned (chat) model"
            )
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token is None:
                raise BackendError(f"{self.model_ref}: the tokenizer has neither a padding nor an end-of-text token")
            tokenizer.pad_token = tokenizer.eos_token
        return cast(PreTrainedTokenizerBase, tokenizer)

    def _load_model(self, source: str) -> PreTrainedModel:
        try:
            with _quiet_loading():
                model = AutoModelForCausalLM.from_pretrained(source, dtype=self.dtype)
            model = model.to(self.device)  # type: ignore[arg-type]  # transformers' .to overloads
        except Exception as exc:
            raise BackendError(f"{self.model_ref}: cannot load the model: {first_line(exc)}") from None
        model.eval()
        use_packed_decoding(model)  # one decoding path on the CPU, padded batch or not
        # Sampling is fully described by SamplingParams: drop the checkpoint's sampling defaults
        # (top_k, repetition_penalty...) and keep only its special tokens. Generation stops at any
        # end-of-text token the checkpoint or the tokenizer names.
        old = model.generation_config
        self._eos_ids = _token_ids(old.eos_token_id if old is not None else None)
        self._eos_ids |= _token_ids(self.tokenizer.eos_token_id)
        model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
            bos_token_id=old.bos_token_id if old is not None else None,
            eos_token_id=sorted(self._eos_ids) or None,
            pad_token_id=self._pad_id,
        )
        return cast(PreTrainedModel, model)

    def _token_budget(self) -> int:
        if self.device.type != "cuda":
            return CPU_BATCH_TOKENS
        free, _ = torch.cuda.mem_get_info(self.device)
        return kv_token_budget(self.model.config, self.dtype, free)

    def _head_budget(self) -> int:
        """Heads held at once: 2 GiB of keys and values on the CPU, a tenth of the free memory on a GPU."""
        free = torch.cuda.mem_get_info(self.device)[0] if self.device.type == "cuda" else 2**31
        return kv_token_budget(self.model.config, self.dtype, free, share=0.1 if self.device.type == "cuda" else 1.0)

    @property
    def _pad_id(self) -> int:
        return int(cast(int, self.tokenizer.pad_token_id))

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "hf",
            "model": self.model_ref,
            "name": self.name,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "batch_size": self.batch_size,
            "max_batch_tokens": self.max_batch_tokens,
            "max_decode_tokens": self.max_decode_tokens,
            "attention": getattr(self.model.config, "_attn_implementation", None),
            "prefix_reuse": self.prefix_reuse,
            "max_head_tokens": self.max_head_tokens,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        }

    # --------------------------------------------------------------- encoding

    def render(self, chat: Chat) -> str:
        """The chat as the model sees it, ending with the assistant's generation prompt."""
        return render_chat(self.tokenizer, chat, self.name)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, with no special tokens added (chat templates write their own)."""
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), add_special_tokens=False)
        return [list(ids) for ids in cast(list[list[int]], encoded["input_ids"])]

    def _plans(self, prompts: Sequence[Sequence[int]], *, decoding: bool = False) -> Iterator[tuple[Plan, HeadStore]]:
        """The batches to run ``prompts`` in, each with the keys and values of its rows' heads.

        With prefix reuse on, each prompt's head is the longer of the prefix it
        shares with another prompt of the call (:func:`shared_heads`) and the
        longest head held from earlier calls (:attr:`heads`); each head runs
        once (:meth:`_head_kv`), in waves that hold at most ``max_head_tokens``
        tokens of heads at a time; batches are cut by each prompt's own length
        within ``max_batch_tokens``, or for ``decoding`` by its whole length
        within ``max_decode_tokens`` (:func:`plan_batches`). Off: batches by
        length, nothing shared.
        """
        heads = self._heads_of(prompts) if self.prefix_reuse else [0] * len(prompts)
        for wave in waves(prompts, heads, self.max_head_tokens):
            store = self._head_kv(sorted({tuple(prompts[i][: heads[i]]) for i in wave if heads[i]}))
            lengths = [len(prompts[i]) for i in wave]
            wave_heads = [heads[i] for i in wave]
            budget = self.max_decode_tokens if decoding else self.max_batch_tokens
            for plan in plan_batches(lengths, wave_heads, self.batch_size, budget, decoding=decoding):
                yield Plan([wave[r] for r in plan.rows], plan.heads), store

    def _heads_of(self, prompts: Sequence[Sequence[int]], *, shared: bool = True) -> list[int]:
        """Per prompt, the length of its head: the longer of the prefix it shares with another of ``prompts``
        (:func:`shared_heads`; none unless ``shared``) and the longest head held from earlier calls."""
        found = shared_heads(prompts) if shared else [0] * len(prompts)
        return [max(n, self.heads.longest(p)) for p, n in zip(prompts, found, strict=True)]

    def _head_kv(self, heads: Sequence[tuple[int, ...]], depth: int = 1) -> HeadStore:
        """The keys and values of each head: held ones from :attr:`heads`, the others run once and then held.

        A head to run continues from the longest head it shares with another
        one to run (to :data:`MAX_DEPTH` levels) or that is held, run first the same way.
        """
        store: HeadStore = {}
        todo: list[tuple[int, ...]] = []
        for head in heads:
            held = self.heads.get(head)
            if held is None:
                todo.append(head)
            else:
                store[head] = held
        if not todo:
            return store
        inner = self._heads_of(todo, shared=depth < MAX_DEPTH)
        inner_kv = self._head_kv(sorted({h[:n] for h, n in zip(todo, inner, strict=True) if n}), depth + 1)
        for plan in plan_batches([len(h) for h in todo], inner, self.batch_size, self.max_batch_tokens):
            rows = [list(todo[i]) for i in plan.rows]
            self.prompt_tokens += PromptTokenCount(requested=0, computed=count(plan, [len(r) for r in rows]).computed)
            ids, mask, cache, cached = self._with_heads(rows, plan, inner_kv)
            cache = cache_of(self._forward(ids, mask, cache, cached))
            for k, i in enumerate(plan.rows):
                store[todo[i]] = row_kv(cache, mask, k)
                self.heads.put(todo[i], store[todo[i]])
        return store

    def _left_pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
                mask[i, width - len(row) :] = 1
        return ids.to(self.device), mask.to(self.device)

    # -------------------------------------------------------------- generate

    def _rng(self) -> contextlib.AbstractContextManager[Any]:
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        return torch.random.fork_rng(devices=devices)

    def generate(self, chats: Sequence[Chat], params: SamplingParams) -> list[Completion]:
        if not chats:
            return []
        prompts = self.encode([self.render(chat) for chat in chats])
        stops = [s for s in params.stop if s]
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "pad_token_id": self._pad_id}
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False)
        if stops:
            kwargs.update(stopping_criteria=StoppingCriteriaList([self._stop_criteria(tuple(stops))]))
        results: list[Completion | None] = [None] * len(chats)
        with torch.inference_mode(), self._rng():
            torch.manual_seed(params.seed)
            for plan, store in self._plans(prompts, decoding=True):
                rows = [prompts[i] for i in plan.rows]
                self.prompt_tokens += count(plan, [len(r) for r in rows])
                ids, mask = self._left_pad(rows)
                room = params.max_new_tokens
                if plan.shares or ids.numel() > self.max_batch_tokens:
                    cache = self._prompt_cache(rows, plan, store, room)
                else:
                    cache = roomy_cache(self.model.config, room)
                out = self.model.generate(  # type: ignore[operator]
                    input_ids=ids, attention_mask=mask, **kwargs, **{self._cache_kwarg: cache}
                )
                sequences = cast(torch.Tensor, out)
                new = sequences[:, ids.shape[1] :].cpu()
                for row, i in enumerate(plan.rows):
                    results[i] = self._completion(new[row], stops)
        return [r for r in results if r is not None]

    def _stop_criteria(self, stops: tuple[str, ...]) -> StopStringCriteria:
        """transformers' stop-string matcher, built once per set of stop strings.

        Building one scans the whole vocabulary (~0.5 s for 49k tokens), and
        ``generate(stop_strings=...)`` would do that on every call.
        """
        criteria = self._stop_cache.pop(stops, None)
        if criteria is None:
            criteria = StopStringCriteria(tokenizer=self.tokenizer, stop_strings=list(stops))
        self._stop_cache[stops] = criteria  # most recently used last
        while len(self._stop_cache) > 16:
            self._stop_cache.pop(next(iter(self._stop_cache)))
        return criteria

    def _completion(self, new: torch.Tensor, stops: Sequence[str]) -> Completion:
        ended = torch.isin(new, self._ends).nonzero()
        count = int(ended[0, 0]) if len(ended) else int(new.shape[0])
        text = cast(str, self.tokenizer.decode(new[:count].tolist(), skip_special_tokens=True))
        return Completion(text=cut_at_stop(text, stops).strip(), tokens=count)

    # ----------------------------------------------------------------- score

    def option_ids(self, prompt: str, prompt_ids: Sequence[int], options: Sequence[str]) -> list[list[int]]:
        """The token ids of each option as it continues ``prompt`` (see :func:`continuation_ids`)."""
        return continuation_ids(self.encode, prompt, prompt_ids, options)

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        texts = [self.render(r.chat) for r in requests]
        prompt_ids = self.encode(texts)
        option_ids = [
            self.option_ids(text, p_ids, r.options) for r, text, p_ids in zip(requests, texts, prompt_ids, strict=True)
        ]
        scores = [[0.0] * len(r.options) for r in requests]  # an empty option has probability 1
        with torch.inference_mode():
            for plan, store in self._plans(prompt_ids):
                head_of = dict(zip(plan.rows, plan.heads, strict=True))
                for part in [Plan(p, [head_of[i] for i in p]) for p in self._logit_parts(plan.rows, option_ids)]:
                    rows = [prompt_ids[i] for i in part.rows]
                    self.prompt_tokens += count(part, [len(r) for r in rows])
                    values = self._score_batch(rows, [option_ids[i] for i in part.rows], part, store)
                    for i, row in zip(part.rows, values, strict=True):
                        scores[i] = row
        return scores

    def _logit_parts(self, batch: list[int], option_ids: Sequence[Sequence[Sequence[int]]]) -> Iterator[list[int]]:
        """Cut a batch so that the option logits one pass keeps stay within ``_LOGITS_BUDGET``."""
        part: list[int] = []
        kept = 0
        for i in batch:
            size = sum(max(len(o), 1) for o in option_ids[i]) * self._vocab_size
            if part and kept + size > _LOGITS_BUDGET:
                yield part
                part, kept = [], 0
            part.append(i)
            kept += size
        if part:
            yield part

    def _prefill(
        self, prompts: Sequence[list[int]], plan: Plan, store: HeadStore
    ) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """Run the prompts: the logits of each one's last token, the key/value cache and its attention mask.

        Rows with a head in ``plan`` continue from its keys and values in ``store`` (:meth:`_with_heads`).
        """
        ids, mask, cache, cached = self._with_heads(prompts, plan, store)
        out = self._forward(ids, mask, cache, cached)
        return out.logits[:, -1], cache_of(out), mask

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, cache: Any, cached: int) -> Any:
        """One pass over ``ids[:, cached:]`` after ``cache`` (None: nothing before), positions following ``mask``
        (padding anywhere is skipped), the last column's logits only."""
        inputs: dict[str, Any] = {"input_ids": ids[:, cached:], "attention_mask": mask, "use_cache": True}
        if cache is not None:
            inputs[self._cache_kwarg] = cache
        if self._takes_positions:
            inputs["position_ids"] = ((mask.cumsum(-1) - 1).clamp(min=0))[:, cached:]
        if self._takes_logits_to_keep:
            inputs["logits_to_keep"] = 1
        return self.model(**inputs)

    def _with_heads(
        self, prompts: Sequence[list[int]], plan: Plan, store: HeadStore
    ) -> tuple[torch.Tensor, torch.Tensor, Any, int]:
        """The rows' ids and mask, the cache of their heads (None: no row has one), and the columns it holds.

        Each row's own tokens follow its head, left-padded, so padding may sit
        between a head and the row's tokens; positions follow the mask, so a
        row sees what it would see alone. The ids of the cached columns are padding.
        """
        if not plan.shares:
            ids, mask = self._left_pad(prompts)
            return ids, mask, None, 0
        heads = [store[tuple(p[:h])] if h else None for p, h in zip(prompts, plan.heads, strict=True)]
        own_ids, own = self._left_pad([p[h:] for p, h in zip(prompts, plan.heads, strict=True)])
        cache, head_mask = stack_heads(heads, self.model.config, room=own_ids.shape[1])
        width = head_mask.shape[1]
        ids = torch.cat([torch.full_like(head_mask, self._pad_id), own_ids], dim=1)
        return ids, torch.cat([head_mask, own], dim=1), cache, width

    def _prompt_cache(self, prompts: Sequence[list[int]], plan: Plan, store: HeadStore, room: int) -> Any:
        """The cache of every prompt but its last token, heads from ``store``, laid out as plain left padding,
        with ``room`` columns to spare.

        The rows run in groups of one head length, each cut into passes within
        ``max_batch_tokens`` (:meth:`_passes`). Rows of one decoding batch may
        have heads of very different lengths, and run together every row's own
        tokens would sit after the longest head, padded to the longest own
        part: measured (bf16, 2-core AMD EPYC, the engine_ceiling run), that
        made the prompt passes with reuse slower per token than without it. A
        decoding batch may hold more tokens (``max_decode_tokens``) than one
        prompt pass runs well on a CPU. Generating from the stacked result,
        each row's last token and every new one see exactly the keys and
        values (and the cache has the width) they would from one pass.
        """
        shorter = [p[:-1] for p in prompts]  # generate() runs the last token itself
        rows_kv: list[HeadKV | None] = [None] * len(prompts)
        for group in self._passes(plan, [len(p) for p in shorter]):
            part = Plan([plan.rows[i] for i in group], [plan.heads[i] for i in group])
            ids, mask, cache, cached = self._with_heads([shorter[i] for i in group], part, store)
            if ids.shape[1] > cached:  # some rows have own tokens before their last
                cache = cache_of(self._forward(ids, mask, cache, cached))
            if cache is None:  # rows of one token: nothing before it
                continue
            for k, i in enumerate(group):
                rows_kv[i] = row_kv(cache, mask, k)
        some = next((kv for kv in rows_kv if kv is not None), None)
        if some is None:  # every prompt is one token long
            return roomy_cache(self.model.config, room)
        empty = [(k[:, :0], v[:, :0]) for k, v in some]
        cache, _ = stack_heads([kv if kv is not None else empty for kv in rows_kv], self.model.config, room)
        return cache

    def _passes(self, plan: Plan, lengths: Sequence[int]) -> Iterator[list[int]]:
        """Positions in ``plan`` grouped by head length (0: no head), each group cut into passes of
        ``lengths`` within ``max_batch_tokens`` and bounded padding (:func:`plan_batches`)."""
        groups: dict[int, list[int]] = {}
        for i, head in enumerate(plan.heads):
            groups.setdefault(head, []).append(i)
        for group in groups.values():
            heads = [plan.heads[i] for i in group]
            for part in plan_batches([lengths[i] for i in group], heads, len(group), self.max_batch_tokens):
                yield [group[r] for r in part.rows]

    def _score_batch(
        self,
        prompts: Sequence[list[int]],
        options: Sequence[Sequence[Sequence[int]]],
        plan: Plan,
        store: HeadStore,
    ) -> list[list[float]]:
        """Sum of each option's token log-probs: each prompt runs ONCE, every option continues from its cache.

        The prompt's last logits give each option's first token; options of two
        or more tokens then run as one batch of continuations over the prompts'
        cached keys and values (selected per option row), so a prompt with n
        options costs one prompt pass plus n short continuations, not n prompt passes.
        ``plan`` and ``store``: the rows' heads, run once for the call (:meth:`_prefill`).
        """
        last, cache, mask = self._prefill(prompts, plan, store)
        device = mask.device
        first = torch.log_softmax(last.float(), dim=-1)
        scores = [[0.0] * len(opts) for opts in options]
        longer: list[tuple[int, int]] = []  # (prompt, option) of options with more than one token
        for b, opts in enumerate(options):
            for o, tokens in enumerate(opts):
                if tokens:
                    scores[b][o] = float(first[b, tokens[0]])
                if len(tokens) > 1:
                    longer.append((b, o))
        if not longer:
            return scores
        # Continuations: feed tokens[:-1] after the prompt (right-padded), read log P(tokens[1:]).
        width = max(len(options[b][o]) - 1 for b, o in longer)
        rows = torch.tensor([b for b, _ in longer], device=device)
        feed = torch.full((len(longer), width), self._pad_id, dtype=torch.long)
        targets = torch.full((len(longer), width), self._pad_id, dtype=torch.long)
        valid = torch.zeros((len(longer), width), dtype=torch.long)
        for r, (b, o) in enumerate(longer):
            tokens = options[b][o]
            n = len(tokens) - 1
            feed[r, :n] = torch.tensor(tokens[:-1])
            targets[r, :n] = torch.tensor(tokens[1:])
            valid[r, :n] = 1
        feed, targets, valid = feed.to(device), targets.to(device), valid.to(device)
        cache.batch_select_indices(rows)
        cont: dict[str, Any] = {
            "input_ids": feed,
            "attention_mask": torch.cat([mask[rows], valid], dim=1),
            self._cache_kwarg: cache,
            "use_cache": True,
        }
        if self._takes_positions:
            cont["position_ids"] = mask[rows].sum(-1, keepdim=True) + torch.arange(width, device=device)
        logprobs = torch.log_softmax(self.model(**cont).logits.float(), dim=-1)
        picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        sums = torch.where(valid.bool(), picked, 0.0).sum(-1).cpu()
        for r, (b, o) in enumerate(longer):
            scores[b][o] += float(sums[r])
        return scores


__all__ = ["HFBackend"]
