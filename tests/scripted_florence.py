"""A tiny Florence-2 whose answer depends on its input: each (image, prompt) pair of a script gets its own answer.

``make_scripted_florence(path, script)`` writes a real ``Florence2ForConditionalGeneration`` checkpoint and
processor (the tokenizer and processor of :mod:`tiny_florence`). ``script`` lists cases ``(image, prompt, answer,
prob)``: asked ``prompt`` (a task token and its text input, e.g. ``"<OD>"``, ``"<REGION_TO_CATEGORY><loc_1>…"``)
about ``image``, greedy decoding and beam search emit ``answer`` then ``</s>``, every token with probability
``prob``. Anything else asked gets an answer nobody scripted (typically nonsense).

How the answer reaches the decoder: nothing is keyed on ids. The vision tower and the text encoder keep random
weights (the encoder's token embeddings too, so prompts matter), and the decoder's cross-attention is random and
strong: the decoder reads the image and the prompt only through the encoder states it attends to. The decoder's own
token embeddings are zero and its position embedding is one basis direction per step, so its last hidden state is a
function of (step, what it read) and nothing else. ``lm_head`` is then solved (least squares over every step of
every case, teacher-forced through the model's own forward) so that each case's step ``t`` has the scripted token
at ``prob`` and the rest sharing ``1 - prob``. So an image's features sent to another row, a region box paired with
the wrong image, or a prompt lost on the way all change the answer.

Limits: the distribution at a step does not depend on earlier tokens, so beams never disagree with greedy
decoding; the script must hold cases whose encoder states differ (distinct images, distinct prompts), else the
solve is ill-conditioned and the builder refuses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tiny_florence import POST_PROCESSOR_CONFIG, _build_tokenizer

__all__ = ["Case", "make_scripted_florence"]


@dataclass(frozen=True)
class Case:
    image: Image.Image
    prompt: str  # task token + text input, as the processor is given it
    answer: str
    prob: float = 0.9


def make_scripted_florence(path: str | Path, script: list[Case], image_size: int = 64, seed: int = 0) -> Path:
    """Build, check and save the scripted model at ``path``; return ``Path(path)``."""
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
    answers = [tok(c.answer, add_special_tokens=False)["input_ids"] for c in script]
    for case, ids in zip(script, answers):
        if tok.decode(ids, skip_special_tokens=False) != case.answer:
            raise ValueError(f"answer does not round-trip through the tokenizer: {case.answer!r}")
        if not 1.0 / vocab < case.prob < 1.0:
            raise ValueError(f"prob must lie in (1/{vocab}, 1), got {case.prob}")
    steps = max(len(a) for a in answers) + 3  # answer, </s>, and a few more </s> for beams that run on
    cases = len(script)
    units = cases * steps  # one detector unit per (case, step)
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
        tie_word_embeddings=False,  # the encoder reads token embeddings, the decoder's own stay zero
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
    attn = layer.encoder_attn
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lm.shared.weight.copy_(torch.randn(*lm.shared.weight.shape, generator=gen))  # prompts shape the encoder
        dec.embed_tokens.weight.zero_()
        pos = dec.embed_positions
        pos.weight.zero_()
        for t in range(pos.weight.shape[0] - pos.offset):
            pos.weight[pos.offset + t, min(t, steps - 1)] = 1.0
        for lin in (layer.self_attn.out_proj, attn.q_proj, attn.k_proj, layer.fc1, layer.fc2):
            lin.weight.zero_()  # self-attention silent; cross-attention uniform over the encoder states
            lin.bias.zero_()
        attn.v_proj.weight.copy_(torch.eye(d_model))
        attn.v_proj.bias.zero_()
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
    decoder_ids = torch.full((1, steps), eos, dtype=torch.long)

    encoded: dict[int, tuple] = {}

    def forward(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(the mean encoder state the decoder reads, the decoder's last hidden states) of case ``k``."""
        inp = inputs[k]
        if k not in encoded:  # the vision tower and encoder do not change: run them once per case
            out = model.model(**inp, decoder_input_ids=decoder_ids)
            encoded[k] = BaseModelOutput(last_hidden_state=out.encoder_last_hidden_state)
        else:
            out = model.model(encoder_outputs=encoded[k], attention_mask=inp["attention_mask"],
                              decoder_input_ids=decoder_ids)
        mask = inp["attention_mask"][0].bool()
        return encoded[k].last_hidden_state[0][mask].double().mean(0), out.last_hidden_state[0].double()

    with torch.no_grad():
        # 1. Cross-attention output: case r's mean encoder state → direction `steps + r` (least squares).
        means = torch.stack([forward(k)[0] for k in range(cases)])  # (cases, d)
        singular = torch.linalg.svdvals(means)
        if singular[-1] < 1e-6 * singular[0]:
            raise ValueError("script cases too alike to tell apart: use more distinct images or prompts")
        scale = math.sqrt(d_model)
        goal = torch.zeros(cases, d_model, dtype=torch.float64)
        goal[torch.arange(cases), steps + torch.arange(cases)] = scale
        attn.out_proj.weight.copy_(torch.linalg.lstsq(means, goal).solution.T.float())

        # 2. The FFN: one unit per (case, step), a matched filter on that hidden state, firing only there.
        seen = torch.stack([forward(k)[1] for k in range(cases)])  # (cases, steps, d): before the FFN (it is zero)
        flat = seen.reshape(units, d_model)
        unit = flat / flat.norm(dim=1, keepdim=True)
        match = flat @ unit.T  # (rows, units): row k's response to unit u's filter
        own = match.diagonal()
        other = (match - torch.diag(torch.full((units,), float("inf"), dtype=torch.float64))).amax(0)
        if not bool((own - other > 0.2 * own).all()):
            raise ValueError("script cases too alike to tell apart: use more distinct images or prompts")
        gain = 10.0 / (own - other)
        layer.fc1.weight.copy_((unit * gain[:, None]).float())
        layer.fc1.bias.copy_((-gain * (own + other) / 2).float())
        fired = gain * (own - other) / 2  # each unit's activation on its own row
        out_w = torch.zeros(d_model, units, dtype=torch.float64)
        out_w[steps + cases + torch.arange(units), torch.arange(units)] = 2 * scale / fired
        layer.fc2.weight.copy_(out_w.float())

        # 3. lm_head: every (case, step) row's scripted distribution, least squares on the real hidden states.
        hidden = torch.stack([forward(k)[1] for k in range(cases)]).reshape(units, d_model)
        targets = torch.zeros(units, vocab, dtype=torch.float64)
        for r, (case, ids) in enumerate(zip(script, answers)):
            logit = math.log(case.prob * (vocab - 1) / (1.0 - case.prob))  # vs 0 for the others: softmax = prob
            for t in range(steps):
                targets[r * steps + t, ids[t] if t < len(ids) else eos] = logit
        model.lm_head.weight.copy_(torch.linalg.lstsq(hidden, targets).solution.T.float())
        got = torch.log_softmax(model.lm_head(hidden.float()).double(), dim=-1)
        err = (got - torch.log_softmax(targets, dim=-1)).abs().max().item()
    if err > 1e-3 or not torch.equal(got.argmax(-1), targets.argmax(-1)):  # pragma: no cover
        raise AssertionError(f"scripted logits off by {err}")

    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eos,
                                               pad_token_id=tok.pad_token_id, decoder_start_token_id=eos,
                                               forced_eos_token_id=eos)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
