"""A tiny, scripted Florence-2 checkpoint for tests (no model hub, no downloads).

``make_tiny_florence(path, answer, probs)`` writes a real ``Florence2ForConditionalGeneration`` checkpoint plus
its ``Florence2Processor`` to ``path``. Loaded back with ``Florence2ForConditionalGeneration.from_pretrained(path)``
and ``AutoProcessor.from_pretrained(path)``, greedy decoding (and beam search) emits exactly the tokens of
``answer`` followed by ``</s>``, for any image and any task prompt, each token with a known probability.

How it works: the decoder's token embeddings (shared with the encoder) are zero and every decoder sub-layer's
output projection is zero, so the decoder's last hidden state depends on the decoding step only (through the
learned position embedding, one basis direction per step). ``lm_head`` (untied from the embeddings) is then
solved so that at step ``t`` the target token has logit ``log(p_t)`` and every other token ``log((1-p_t)/(V-1))``
(up to a shift common to the step; stored as 0 for the others):
the softmax gives the target exactly ``p_t``, the rest share ``1-p_t`` evenly. Steps after the answer (which only
beam search or a run past ``</s>`` reach) keep emitting ``</s>`` with the end probability.

Tokenization (byte-level vocabulary, no merges): every UTF-8 byte of plain text is one token (a space is its own
token, ``Ġ``), and every ``<loc_K>`` (K = 0..999), ``<poly>``, ``</poly>``, ``<sep>`` is one token.
``answer_tokens(answer)`` gives that split without building anything, so callers can size ``probs``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = ["make_tiny_florence", "answer_tokens", "POST_PROCESSOR_CONFIG", "OCR_PATTERN"]

_SPECIAL_RE = re.compile(r"(<loc_\d+>|<poly>|</poly>|<sep>)")

OCR_PATTERN = r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>"

# All 8 parse keys are required, else parsing raises "Unsupported parse task". The OCR parser reads upper-case keys.
POST_PROCESSOR_CONFIG = {
    "ocr": {"PATTERN": OCR_PATTERN, "AREA_THRESHOLD": 0.0},
    "phrase_grounding": {"banned_grounding_tokens": ["the image"]},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}


def answer_tokens(answer: str) -> list[str]:
    """The tokens the tiny tokenizer makes of ``answer`` (one per UTF-8 byte of text; one per location/poly tag).

    Text bytes are returned as the characters they decode to when they are ASCII; a multi-byte character gives one
    entry per byte (``"\\x.."`` placeholders), so ``len(answer_tokens(a))`` is always the number of answer tokens.
    """
    out: list[str] = []
    for part in _SPECIAL_RE.split(answer):
        if not part:
            continue
        if _SPECIAL_RE.fullmatch(part):
            if part.startswith("<loc_") and not 0 <= int(part[5:-1]) <= 999:
                raise ValueError(f"location token out of range: {part}")
            out.append(part)
        else:
            for ch in part:
                b = ch.encode("utf-8")
                out.extend([ch] if len(b) == 1 else [f"\\x{x:02x}" for x in b])
    return out


def _build_tokenizer():
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer  # v5: BartTokenizer is RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in sorted(ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    vocab["<mask>"] = len(vocab)
    tok = RobertaTokenizer(
        vocab=vocab,
        merges=[],
        add_prefix_space=False,
        extra_special_tokens={"image_token": "<image>"},
    )
    # Normal (not special) added tokens, so decode(..., skip_special_tokens=True) keeps them.
    tok.add_tokens([f"<loc_{i}>" for i in range(1000)] + ["<poly>", "</poly>", "<sep>"])
    return tok


def make_tiny_florence(
    path: str | Path,
    answer: str,
    probs: float | list[float] = 0.9,
    image_size: int = 64,
    *,
    end_prob: float | None = None,
    processor_from: str | Path | None = None,
) -> Path:
    """Build and save a tiny scripted Florence-2 model + processor at ``path``; return ``Path(path)``.

    * ``answer``: the text the model generates (Florence-2 answer format, e.g.
      ``"car<loc_100><loc_200><loc_300><loc_400>"``), emitted token for token, then ``</s>``.
    * ``probs``: softmax probability of each answer token, a float for all, or a list with one entry per answer
      token (``len(answer_tokens(answer))``). Each must satisfy ``1/V < p < 1`` (V = vocabulary size, 1265).
    * ``end_prob``: probability of the final ``</s>``; default: ``probs`` when it is a float, else ``probs[-1]``
      (the last answer token's probability).
    * ``image_size``: the processor resizes every image to ``image_size`` x ``image_size`` (multiple of 32);
      ``image_seq_length`` = (image_size/32)**2 + 1, checked against the vision tower's real output.

    The saved generation config sets no length (as real checkpoints): without ``max_new_tokens`` transformers
    falls back to ``max_length`` 21 (with a UserWarning), enough for 19 answer tokens + ``</s>``; pass
    ``max_new_tokens`` for longer answers. The decoder has 1024 positions, like Florence-2.

    ``processor_from``: a folder with a real Florence-2 checkpoint's tokenizer and processor files (e.g.
    tests/fixtures/checkpoints/florence-community--Florence-2-base): the model then speaks that tokenizer (its
    vocabulary, its special ``<loc_K>`` tokens), takes that processor's image size (768: 577 image tokens), and those
    files are copied into ``path`` as they are. ``probs`` then has one entry per token of *that* tokenizer.

    The hidden size grows with the answer (one direction per step: ``d_model = max(32, ceil8(len + 2))``); about
    175K parameters up to 30 answer tokens, ~1.2M at 170. ``compute_transition_scores(normalize_logits=True)``
    recovers ``log(p)`` to ~1e-5 for short answers, ~6e-5 at 170 tokens (float32 log_softmax).
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

    if image_size <= 0 or image_size % 32:
        raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
    path = Path(path)
    real_processor = None
    if processor_from is None:
        tok = _build_tokenizer()
    else:
        from transformers import AutoProcessor

        real_processor = AutoProcessor.from_pretrained(processor_from)
        tok = real_processor.tokenizer
        image_size = int(real_processor.image_processor.size["height"])
    vocab_size = len(tok)

    ids = tok(answer, add_special_tokens=False)["input_ids"]
    n = len(ids)
    if real_processor is None and n != len(answer_tokens(answer)):  # pragma: no cover - the documented split
        raise AssertionError("tokenizer and answer_tokens disagree")
    if tok.decode(ids, skip_special_tokens=False) != answer:
        raise ValueError(f"answer does not round-trip through the tokenizer: {answer!r}")
    if isinstance(probs, (int, float)):
        plist = [float(probs)] * n
        end_p = float(probs) if end_prob is None else float(end_prob)
    else:
        plist = [float(p) for p in probs]
        if len(plist) != n:
            raise ValueError(f"probs has {len(plist)} entries, the answer has {n} tokens: "
                             f"{tok.convert_ids_to_tokens(ids)}")
        end_p = float(end_prob) if end_prob is not None else (plist[-1] if plist else 0.9)
    for p in [*plist, end_p]:
        if not (1.0 / vocab_size < p < 1.0):
            raise ValueError(f"probabilities must lie in (1/{vocab_size}, 1), got {p}")

    max_pos = 1024
    steps = n + 1  # answer tokens, then </s>
    if steps + 1 > max_pos:
        raise ValueError("answer too long")
    d_model = max(32, -(-(steps + 1) // 8) * 8)  # one hidden direction per step, plus the one LayerNorm removes

    vision = Florence2VisionConfig(
        depths=[1, 1, 1, 1],
        embed_dim=[8, 8, 8, 16],
        num_heads=[1, 1, 1, 2],
        num_groups=[1, 1, 1, 2],
        window_size=2,
        drop_path_rate=0.0,
        mlp_ratio=1.0,
        projection_dim=d_model,
        max_position_embeddings=max(50, image_size // 32 + 1),
    )
    text = BartConfig(
        vocab_size=vocab_size,
        d_model=d_model,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=8,
        decoder_ffn_dim=8,
        max_position_embeddings=max_pos,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id,
        forced_eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,  # encoder/decoder embed_tokens stay tied to `shared` ...
    )
    config = Florence2Config(
        text_config=text,
        vision_config=vision,
        image_token_id=tok.image_token_id,
        tie_word_embeddings=False,  # ... but lm_head is its own tensor
    )
    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(config).eval()

    # The processor's image_seq_length must equal what the vision tower + projector really produce.
    with torch.no_grad():
        feats = model.get_image_features(pixel_values=torch.zeros(1, 3, image_size, image_size)).pooler_output
    seq_len = (image_size // 32) ** 2 + 1
    if feats.shape[1] != seq_len:  # pragma: no cover
        raise AssertionError(f"vision tower gives {feats.shape[1]} image tokens, expected {seq_len}")

    lm = model.model.language_model
    dec = lm.decoder
    with torch.no_grad():
        # Token embeddings vanish, so the decoder sees positions only. (With the *text* config's
        # tie_word_embeddings=False the encoder's and decoder's embed_tokens would be separate tensors from
        # `shared`; zero all three to be safe.)
        for emb in (lm.shared, lm.encoder.embed_tokens, dec.embed_tokens):
            emb.weight.zero_()
        for layer in dec.layers:
            for lin in (layer.self_attn.out_proj, layer.encoder_attn.out_proj, layer.fc2):
                lin.weight.zero_()
                lin.bias.zero_()
            for ln in (layer.self_attn_layer_norm, layer.encoder_attn_layer_norm, layer.final_layer_norm):
                ln.weight.fill_(1.0)
                ln.bias.zero_()
        dec.layernorm_embedding.weight.fill_(1.0)
        dec.layernorm_embedding.bias.zero_()
        pos = dec.embed_positions  # row index = position + offset (2)
        pos.weight.zero_()
        for t in range(max_pos):
            pos.weight[pos.offset + t, min(t, steps - 1)] = 1.0

        # Real last hidden states at steps 0..steps-1 (encoder states are irrelevant: cross-attention is zeroed).
        hidden = dec(
            input_ids=torch.randint(0, vocab_size, (1, steps)),
            encoder_hidden_states=torch.randn(1, 3, d_model),
            use_cache=False,
        ).last_hidden_state[0].double()  # (steps, d)

        targets = [*ids, tok.eos_token_id]
        target_logits = torch.empty(steps, vocab_size, dtype=torch.float64)
        # Softmax is shift-invariant: others at 0, target at log(p (V-1) / (1-p)) is the same distribution as
        # log(p) vs log((1-p)/(V-1)), with smaller numbers (better float32 precision).
        target_logits.zero_()
        for t, (y, p) in enumerate(zip(targets, [*plist, end_p])):
            target_logits[t, y] = math.log(p * (vocab_size - 1) / (1.0 - p))
        weight_t = torch.linalg.pinv(hidden) @ target_logits  # (d, V): hidden @ weight_t == target_logits
        model.lm_head.weight.copy_(weight_t.T.float())

        # Verify numerically in float32.
        logits = model.lm_head(hidden.float())
        got = torch.log_softmax(logits.double(), dim=-1)
        want = torch.log_softmax(target_logits, dim=-1)
        err = (got - want).abs().max().item()
        if err > 1e-5 or not torch.equal(logits.argmax(-1), torch.tensor(targets)):  # pragma: no cover
            raise AssertionError(f"scripted logits off by {err}")

    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        decoder_start_token_id=tok.eos_token_id,
        forced_eos_token_id=tok.eos_token_id,
    )

    image_processor = CLIPImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        do_center_crop=False,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_convert_rgb=True,
    )
    image_processor.image_seq_length = seq_len
    processor = Florence2Processor(
        image_processor=image_processor,
        tokenizer=tok,
        post_processor_config=POST_PROCESSOR_CONFIG,
    )

    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    if real_processor is not None:  # the real tokenizer / processor files, as published
        for file in Path(processor_from).iterdir():
            if file.suffix in (".json", ".txt") and file.name not in ("config.json", "generation_config.json"):
                shutil.copy(file, path / file.name)
        return path
    processor.save_pretrained(path)
    return path
