"""A tiny Florence-2 whose answer depends on its input: each (image, prompt) pair of a script gets its own answer.

``make_scripted_florence(path, script)`` writes a real ``Florence2ForConditionalGeneration`` checkpoint and
processor (the tokenizer and processor of :mod:`tiny_florence`). ``script`` lists cases ``(image, prompt, answer,
prob)``: asked ``prompt`` (a task token and its text input, e.g. ``"<OD>"``, ``"<REGION_TO_CATEGORY><loc_1>…"``)
about ``image``, greedy decoding and beam search emit ``answer`` then ``</s>``, every token with probability
``prob``. Anything else asked gets an answer nobody scripted (typically nonsense).

A case may script a decoding *tree*: ``prob`` may give one probability per token (then one for ``</s>``), and
``branches`` other answers the decoder may take, each with its own probabilities (tokens they share with the answer,
or with each other, must agree). At every scripted prefix the next token is one of the scripted continuations, with
its probability, or any other token, all of them sharing what is left. Greedy decoding follows the most probable
token at each step; beam search finds the path of best ``sum(log p) / length`` (``</s>`` counted, transformers'
``length_penalty`` of 1). So a case whose most probable first token leads on to improbable tokens, while another
first token leads on to probable ones, answers one thing at ``num_beams=1`` and another at ``num_beams >= 2``.

How the answer reaches the decoder: nothing is keyed on ids. The vision tower and the text encoder keep random
weights (the encoder's token embeddings too, so prompts matter); the decoder reads the image and the prompt only
through its cross-attention, which weighs the encoder states by their content (a constant query: the same at every
step) and maps what it read to a direction of its own per case (ridge least squares). The decoder has its own
random token embeddings, a position embedding of one basis direction per step, and a self-attention that averages
over every token so far, so its hidden state is a function of (step, tokens so far, what it read). Each (case,
scripted prefix) row gets an FFN unit, a matched filter on that row's state (they all lie on LayerNorm's sphere)
that fires on it alone, and ``lm_head`` is solved (least squares over every scripted prefix of every case, the
branches included, teacher-forced through the model's own forward) so that each row's next token has the scripted
distribution. So an image's features sent to another row, a region box paired with the wrong image, a prompt lost
on the way, or a beam's token read at another beam or another row all change the answer or its probabilities. The
builder then runs ``generate`` over the whole script in one batch (``num_beams`` 1, 2, 3 by default) and refuses a
model that does not emit the answers the script implies, each token at its scripted probability (read at its beam
through ``beam_indices``, within 1e-3).

Limits: only scripted prefixes have scripted distributions. A beam that leaves the script (an unscripted token, at
most what its node leaves over) reads whatever the solve gives there, so keep scripted probabilities well above
that share: the builder's ``generate`` check is what guarantees the answers, for the ``check_beams`` it ran. Beam
search is scripted at transformers' defaults only (``length_penalty`` 1, no ``early_stopping``), and the beam
answer is one of the scripted paths (the best one); with more branches than beams, pruning could pick another
(the check then refuses). Cases must read differently (distinct images or prompts) and prefixes of one step must
differ in more than token order, else the builder refuses (rows too alike to tell apart). Probabilities come out
within about 1e-5 of the script on the machine that built the model; compare with a tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tiny_florence import POST_PROCESSOR_CONFIG, _build_tokenizer

__all__ = ["Branch", "Case", "make_scripted_florence"]

#: per token, or one probability for every token and the closing ``</s>``
Probs = float | tuple[float, ...]


@dataclass(frozen=True)
class Branch:
    """Another answer a case's decoder may take, and its tokens' probabilities (see :class:`Case`)."""

    answer: str
    prob: Probs = 0.9


@dataclass(frozen=True)
class Case:
    image: Image.Image
    prompt: str  # task token + text input, as the processor is given it
    answer: str
    prob: Probs = 0.9  # every token's, or one per token of ``answer`` and then one for ``</s>``
    branches: tuple[Branch, ...] = ()  # the rest of the case's decoding tree

    def paths(self) -> tuple[Branch, ...]:
        return (Branch(self.answer, self.prob), *self.branches)


#: how much closer a row's state must be to its own FFN filter than any other row's (a fraction of its norm)
MARGIN = 0.05
#: ridge weight of the cross-attention solve, as a fraction of the largest singular value of what cases read
RIDGE = 1e-3

Tree = dict[tuple[int, ...], dict[int, float]]  # scripted prefix → {next token: its probability}


def _probs(prob: Probs, n: int, answer: str) -> list[float]:
    """One probability per token of an ``n``-token answer, then one for its ``</s>``."""
    if isinstance(prob, (int, float)):
        return [float(prob)] * (n + 1)
    if len(prob) != n + 1:
        raise ValueError(f"{answer!r}: {n} tokens and </s> need {n + 1} probabilities, got {len(prob)}")
    return [float(p) for p in prob]


def _tree(paths: list[tuple[list[int], list[float]]], vocab: int, eos: int) -> Tree:
    """The decoding tree of a case's paths: every prefix of each, up to the one that ends it with ``</s>``."""
    tree: Tree = {}
    for ids, probs in paths:
        for t, (token, p) in enumerate(zip(ids + [eos], probs)):
            children = tree.setdefault(tuple(ids[:t]), {})
            if children.setdefault(token, p) != p:
                raise ValueError(f"branches disagree on the probability of token {token} after {ids[:t]}")
    for prefix, children in tree.items():
        rest = 1.0 - sum(children.values())
        others = rest / (vocab - len(children))  # what each unscripted token gets
        if len(children) == 1 and not 1.0 / vocab < next(iter(children.values())) < 1.0:
            raise ValueError(f"prob must lie in (1/{vocab}, 1), got {next(iter(children.values()))}")
        if rest <= 0 or min(children.values()) <= others:
            raise ValueError(f"after {list(prefix)}: scripted probabilities {sorted(children.values())} must sum "
                             f"below 1 and each beat the unscripted tokens' share")
        if len(set(children.values())) < len(children):
            raise ValueError(f"after {list(prefix)}: two continuations tie at {sorted(children.values())}")
    return tree


def _greedy(tree: Tree, eos: int) -> tuple[list[int], list[float]]:
    """What greedy decoding emits before ``</s>`` (the most probable scripted token at each step), and the
    probabilities of those tokens and the ``</s>``."""
    out: list[int] = []
    probs: list[float] = []
    while True:
        children = tree[tuple(out)]
        token = max(children, key=children.__getitem__)
        probs.append(children[token])
        if token == eos:
            return out, probs
        out.append(token)


def _beam(paths: list[tuple[list[int], list[float]]]) -> tuple[list[int], list[float]]:
    """The path beam search returns: best ``sum(log p) / length`` with ``</s>`` counted (length_penalty 1)."""
    scores = [sum(math.log(p) for p in probs) / len(probs) for _, probs in paths]
    ranked = sorted(scores, reverse=True)
    if len(ranked) > 1 and ranked[0] - ranked[1] < 1e-3:
        raise ValueError(f"two branches tie for beam search (mean log-probabilities {ranked[:2]})")
    return paths[scores.index(ranked[0])]


def make_scripted_florence(
    path: str | Path, script: list[Case], image_size: int = 64, seed: int = 0, check_beams: tuple[int, ...] = (1, 2, 3)
) -> Path:
    """Build, check and save the scripted model at ``path``; return ``Path(path)``.

    ``check_beams``: the ``num_beams`` for which ``generate`` must emit what the script implies (greedy's path at 1,
    beam search's at more), else the builder refuses.
    """
    import torch
    from transformers import (
        BartConfig,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
        Florence2VisionConfig,
        GenerationConfig,
    )
    from transformers.modeling_outputs import BaseModelOutput

    path = Path(path)
    tok = _build_tokenizer()
    vocab = len(tok)
    eos = tok.eos_token_id
    paths: list[list[tuple[list[int], list[float]]]] = []  # per case: (token ids, probabilities) of each path
    for case in script:
        paths.append([])
        for branch in case.paths():
            ids = tok(branch.answer, add_special_tokens=False)["input_ids"]
            if tok.decode(ids, skip_special_tokens=False) != branch.answer:
                raise ValueError(f"answer does not round-trip through the tokenizer: {branch.answer!r}")
            paths[-1].append((ids, _probs(branch.prob, len(ids), branch.answer)))
    steps = max(len(ids) for case in paths for ids, _ in case) + 3  # answer, </s>, and room for beams that run on
    trees = [_tree(case, vocab, eos) for case in paths]
    rows = [(k, prefix) for k, tree in enumerate(trees) for prefix in tree]  # one per (case, scripted prefix)
    cases, units = len(script), len(rows)  # one FFN unit per row
    d_model = -(-(steps + cases + units + 1) // 8) * 8  # positions | cases | units

    vision = Florence2VisionConfig(
        depths=[1, 1, 1, 1], embed_dim=[8, 8, 8, 16], num_heads=[1, 1, 1, 2], num_groups=[1, 1, 1, 2],
        window_size=2, drop_path_rate=0.0, mlp_ratio=1.0, projection_dim=d_model,
        max_position_embeddings=max(50, image_size // 32 + 1),
    )
    text = BartConfig(
        vocab_size=vocab, d_model=d_model, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=1, decoder_attention_heads=1, encoder_ffn_dim=16, decoder_ffn_dim=units,
        activation_function="relu", max_position_embeddings=1024, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=eos,
        decoder_start_token_id=eos, forced_eos_token_id=eos,
        tie_word_embeddings=False,  # the encoder and the decoder read their own token embeddings
    )
    config = Florence2Config(text_config=text, vision_config=vision, image_token_id=tok.image_token_id,
                             tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config).eval()
    lm = model.model.language_model
    dec = lm.decoder
    if dec.embed_tokens.weight.data_ptr() == lm.shared.weight.data_ptr():  # pragma: no cover
        raise AssertionError("decoder token embeddings are tied to the encoder's")
    (layer,) = dec.layers
    attn, self_attn = layer.encoder_attn, layer.self_attn
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lm.shared.weight.copy_(torch.randn(*lm.shared.weight.shape, generator=gen))  # prompts shape the encoder
        dec.embed_tokens.weight.copy_(torch.randn(*dec.embed_tokens.weight.shape, generator=gen))  # tokens so far
        pos = dec.embed_positions
        pos.weight.zero_()
        for t in range(pos.weight.shape[0] - pos.offset):
            pos.weight[pos.offset + t, min(t, steps - 1)] = math.sqrt(d_model)  # as strong as a token embedding
        for lin in (self_attn.q_proj, self_attn.k_proj, attn.q_proj, layer.fc1, layer.fc2):
            lin.weight.zero_()  # self-attention uniform over the tokens so far; cross-attention's query constant
            lin.bias.zero_()
        # cross-attention weighs the encoder states by their content alone (the same at every step): a plain mean
        # is nearly image part + prompt part, so a grid of images × prompts would read nearly degenerate
        attn.q_proj.bias.copy_(2.0 * math.sqrt(d_model) * torch.randn(d_model, generator=gen))  # scores ~ N(0, 4)
        attn.k_proj.weight.copy_(torch.randn(d_model, d_model, generator=gen) / d_model)
        attn.k_proj.bias.zero_()
        for lin in (self_attn.v_proj, self_attn.out_proj, attn.v_proj):
            lin.weight.copy_(torch.eye(d_model))  # self-attention adds the mean of the tokens so far
            lin.bias.zero_()
        attn.out_proj.weight.zero_()
        attn.out_proj.bias.zero_()

    image_processor = CLIPImageProcessor(
        do_resize=True, size={"height": image_size, "width": image_size}, do_center_crop=False,
        crop_size={"height": image_size, "width": image_size}, do_rescale=True, do_normalize=True,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_convert_rgb=True,
    )
    image_processor.image_seq_length = (image_size // 32) ** 2 + 1
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tok,
                                   post_processor_config=POST_PROCESSOR_CONFIG)
    inputs = [processor(text=[c.prompt], images=[c.image], return_tensors="pt") for c in script]
    # teacher forcing: each path fed after the start token (padded with </s>); step t's state is prefix ids[:t]'s
    forced = [torch.tensor([[eos] + ids + [eos] * (steps - len(ids)) for ids, _ in case]) for case in paths]
    encoded: dict[int, torch.Tensor] = {}
    read: list[torch.Tensor] = []  # what the cross-attention read, before its output projection
    attn.out_proj.register_forward_hook(lambda _module, args, _out: read.append(args[0][0, 0].double()))

    def forward(k: int) -> tuple[torch.Tensor, dict[tuple[int, ...], torch.Tensor]]:
        """(what the decoder reads of the encoder states, the decoder's last hidden state per prefix) of case k."""
        inp, ids = inputs[k], forced[k]
        if k not in encoded:  # the vision tower and encoder do not change: run them once per case
            encoded[k] = model.model(**inp, decoder_input_ids=ids[:1]).encoder_last_hidden_state
        state = encoded[k].expand(len(ids), -1, -1)
        out = model.model(encoder_outputs=BaseModelOutput(last_hidden_state=state),
                          attention_mask=inp["attention_mask"].expand(len(ids), -1), decoder_input_ids=ids)
        hidden = {}
        for p, (path_ids, _) in enumerate(paths[k]):
            for t in range(len(path_ids) + 1):
                hidden.setdefault(tuple(path_ids[:t]), out.last_hidden_state[p, t].double())
        return read[-1], hidden

    def states() -> torch.Tensor:
        """The decoder's last hidden state of every row, in ``rows`` order."""
        per_case = [forward(k)[1] for k in range(cases)]
        return torch.stack([per_case[k][prefix] for k, prefix in rows])

    with torch.no_grad():
        # 1. Cross-attention output: what case r reads → near direction `steps + r`. Ridge least squares, with a
        # bias for what all cases share: the exact solve would blow up the directions in which cases hardly differ
        # (a grid of images × prompts reads nearly image part + prompt part) and with them float noise; cases stay
        # apart through the directions in which they do differ, and step 2 checks that they do.
        means = torch.stack([forward(k)[0] for k in range(cases)])  # (cases, d)
        scale = math.sqrt(d_model)
        goal = torch.zeros(cases, d_model, dtype=torch.float64)
        goal[torch.arange(cases), steps + torch.arange(cases)] = scale
        x = torch.cat([means, torch.ones(cases, 1, dtype=torch.float64)], dim=1)
        ridge = (RIDGE * torch.linalg.matrix_norm(means, ord=2)) ** 2 * torch.eye(d_model + 1, dtype=torch.float64)
        ridge[-1, -1] = 0.0  # the bias is free
        solved = torch.linalg.solve(x.T @ x + ridge, x.T @ goal)  # (d + 1, d)
        attn.out_proj.weight.copy_(solved[:-1].T.float())
        attn.out_proj.bias.copy_(solved[-1].float())

        # 2. The FFN: one unit per row, a matched filter on that row's state (they all lie on LayerNorm's sphere, so
        # a threshold between a row's response to its own filter and the best other row's makes it fire on its own).
        seen = states()  # (units, d): before the FFN (it is zero)
        unit = seen / seen.norm(dim=1, keepdim=True)
        match = seen @ unit.T  # (rows, units): row k's response to unit u's filter
        own = match.diagonal()
        other = (match - torch.diag(torch.full((units,), float("inf"), dtype=torch.float64))).amax(0)
        if not bool((own - other > MARGIN * own).all()):
            raise ValueError("script cases or prefixes too alike to tell apart: use more distinct images, prompts "
                             "or answers")
        gain = 10.0 / (own - other)
        layer.fc1.weight.copy_((unit * gain[:, None]).float())
        layer.fc1.bias.copy_((-gain * (own + other) / 2).float())
        fired = gain * (own - other) / 2  # each unit's activation on its own row
        out_w = torch.zeros(d_model, units, dtype=torch.float64)
        out_w[steps + cases + torch.arange(units), torch.arange(units)] = 2 * scale / fired
        layer.fc2.weight.copy_(out_w.float())

        # 3. lm_head: every row's scripted distribution, least squares on the real hidden states.
        hidden = states()
        targets = torch.zeros(units, vocab, dtype=torch.float64)
        for r, (k, prefix) in enumerate(rows):
            children = trees[k][prefix]
            rest = (1.0 - sum(children.values())) / (vocab - len(children))  # each unscripted token's probability
            for token, p in children.items():
                targets[r, token] = math.log(p / rest)  # vs 0 for the others: softmax gives p, and rest to each other
        model.lm_head.weight.copy_(torch.linalg.lstsq(hidden, targets).solution.T.float())
        got = torch.log_softmax(model.lm_head(hidden.float()).double(), dim=-1)
        err = (got - torch.log_softmax(targets, dim=-1)).abs().max().item()
    if err > 1e-3 or not torch.equal(got.argmax(-1), targets.argmax(-1)):
        raise ValueError(f"scripted logits off by {err}: use more distinct images, prompts or answers")

    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eos,
                                               pad_token_id=tok.pad_token_id, decoder_start_token_id=eos,
                                               forced_eos_token_id=eos)
    _check_generate(model, processor, script, {1: [_greedy(t, eos) for t in trees], 2: [_beam(p) for p in paths]},
                    check_beams, steps)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _check_generate(
    model, processor, script: list[Case], want: dict[int, list[tuple[list[int], list[float]]]],
    beams: tuple[int, ...], steps: int,
) -> None:
    """Refuse a model whose ``generate`` (the whole script in one batch) does not emit the scripted answers with
    the scripted probabilities (each token's read at its beam, as transformers' ``compute_transition_scores``)."""
    import torch

    tok = processor.tokenizer
    batch = processor(text=[c.prompt for c in script], images=[c.image for c in script], return_tensors="pt",
                      padding="longest")
    for num_beams in beams:
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=steps, num_beams=num_beams, do_sample=False,
                                 output_scores=True, return_dict_in_generate=True)
        scores = model.compute_transition_scores(out.sequences, out.scores, getattr(out, "beam_indices", None),
                                                 normalize_logits=num_beams == 1).exp()
        for case, row, got, (ids, probs) in zip(script, out.sequences[:, 1:].tolist(), scores.tolist(),
                                                want[min(num_beams, 2)]):
            end = row.index(tok.eos_token_id) if tok.eos_token_id in row else len(row)
            if row[:end] != ids:
                raise ValueError(f"{case.prompt!r}: num_beams={num_beams} emits "
                                 f"{tok.decode(row[:end], skip_special_tokens=False)!r}, scripted "
                                 f"{tok.decode(ids, skip_special_tokens=False)!r}")
            off = max(abs(a - b) for a, b in zip(got[: end + 1], probs))
            if off > 1e-3:
                raise ValueError(f"{case.prompt!r}: num_beams={num_beams} token probabilities off by {off:.2g}: "
                                 f"use more distinct images, prompts or answers")
