"""Training pairs as token ids: the encoder's input and the decoder's labels, checked against the model's limits.

* **Encoder input** — what ``Florence2Processor(text=..., images=...)`` builds: one ``<image>`` placeholder per
  image token, ``<s>``, the task's question (the processor rewrites the task token), ``</s>``.
* **Labels** — ``<s>`` answer ``</s>``, what the tokenizer makes of the answer with its special tokens: the model
  shifts them right itself (decoder start ``</s>``), so it learns to emit ``</s><s>answer</s>`` as the released
  checkpoints do. Padding in a batch is -100 (:func:`collate`), the only id the loss ignores.

A pair whose answer the parser would read back differently, whose answer is longer than the decoder's positions
allow, or whose prompt does not fit the encoder, is counted in the tally and left out: never cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .targets import Pair, pairs_for, round_trips

if TYPE_CHECKING:
    from .data import Dataset

#: what the loss ignores (``torch.nn.functional.cross_entropy``'s ignore_index, transformers' loss functions')
IGNORE = -100


@dataclass
class Sample:
    """One pair ready for the model."""

    pair: Pair
    input_ids: list[int]
    labels: list[int]

    @property
    def example(self) -> int:
        return self.pair.example


def limits(config: Any, processor: Any) -> tuple[int, int]:
    """(most answer tokens, most prompt tokens) a checkpoint takes: its decoder and encoder positions, less the
    special tokens around each and the encoder's image placeholders."""
    positions = int(config.text_config.max_position_embeddings)
    return positions - 2, positions - 2 - int(processor.num_image_tokens)


def encoder_ids(processor: Any, prompts: list[str]) -> list[list[int]]:
    """Each prompt's encoder input ids, as ``processor(text=..., images=...)`` makes them (without an image)."""
    tok = processor.tokenizer
    head = [processor.image_token_id] * processor.num_image_tokens + [tok.bos_token_id]
    questions = processor(text=prompts)["input_ids"] if prompts else []
    return [head + list(ids) + [tok.eos_token_id] for ids in questions]


def build(dataset: Dataset, task: str, processor: Any, max_answer: int, max_prompt: int,
          indices: list[int] | None = None) -> list[Sample]:
    """The samples of the examples ``indices`` (default: all), in order; what cannot be used goes to the tally."""
    tally = dataset.tally
    tally.limits["too_long"] = f"{max_answer} tokens"
    tally.limits["prompt_too_long"] = f"{max_prompt} tokens"
    pairs: list[Pair] = []
    for k in range(len(dataset.examples)) if indices is None else indices:
        example = dataset.examples[k]
        if task == "ocr_regions" and not all(t.strip() for t in example.texts):
            tally.add("no_text", sum(not t.strip() for t in example.texts), example.name)
            continue
        for pair in pairs_for(task, k, example, dataset.classes, processor.post_processor):
            if round_trips(processor, task, example, pair):
                pairs.append(pair)
            else:
                tally.add("unparsable", example=f"{example.name}: {pair.answer[:60]!r}")
    if not pairs:
        return []
    tok = processor.tokenizer
    answers = tok([p.answer for p in pairs], add_special_tokens=True)["input_ids"]
    prompts = encoder_ids(processor, [p.prompt for p in pairs])
    out = []
    head = processor.num_image_tokens + 2
    for pair, labels, ids in zip(pairs, answers, prompts):
        name = dataset.examples[pair.example].name
        if len(labels) - 2 > max_answer:
            tally.add("too_long", example=f"{name}: {len(labels) - 2} tokens")
        elif len(ids) - head > max_prompt:
            tally.add("prompt_too_long", example=f"{name}: {len(ids) - head} tokens")
        else:
            out.append(Sample(pair, ids, list(labels)))
    return out


def collate(samples: list[Sample], pad_id: int) -> dict[str, Any]:
    """A batch: encoder ids padded (right, with the pad id) and masked; labels padded with -100."""
    import torch

    width = max(len(s.input_ids) for s in samples)
    depth = max(len(s.labels) for s in samples)
    input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    labels = torch.full((len(samples), depth), IGNORE, dtype=torch.long)
    for i, s in enumerate(samples):
        input_ids[i, : len(s.input_ids)] = torch.tensor(s.input_ids)
        mask[i, : len(s.input_ids)] = 1
        labels[i, : len(s.labels)] = torch.tensor(s.labels)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
