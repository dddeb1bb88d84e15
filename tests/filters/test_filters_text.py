"""Text and OCR filters: length, repetition, blacklist, FLD-5B parse checks (spaCy), OCR quality."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from autolabel.errors import ConfigError
from autolabel.filters.ocr import quad_area
from autolabel.filters.text import repeated_block
from autolabel.labels import Labels, Text
from filter_cases import build, make_labels, reasons, run, status


def captions(*texts: str, kind: str = "caption") -> list[Text]:
    return [Text(kind=kind, text=t, score=0.9, stage="cap") for t in texts]


def verdicts(lab: Labels) -> list[tuple[str, str]]:
    return [(t.status, t.reason) for t in lab.texts]


# ---- text_length --------------------------------------------------------------------------------------------------


def test_text_length_on_captions_leaves_ocr_texts_alone() -> None:
    lab = make_labels([], texts=captions("a dog", "dog", "") + captions("5", kind="ocr"))
    run("text_length", lab)
    assert verdicts(lab) == [("kept", ""), ("dropped", "too_short"), ("dropped", "too_short"), ("kept", "")]
    lab = make_labels([], texts=captions("a dog on a sofa", "a dog"))
    run("text_length", lab, min_words=3, action="flag")
    assert verdicts(lab) == [("kept", ""), ("flagged", "too_short")]


def test_text_length_on_region_text_skips_rows_without_text_and_ocr_rows() -> None:
    lab = make_labels([[0, 0, 10, 10]] * 3, scores=[0.9] * 3, text=np.array(["car", "a red car", ""], dtype=object))
    ocr = make_labels([[0, 0, 10, 10]], scores=[0.9], stage="reader", task="ocr", text=np.array(["5"], dtype=object))
    run("text_length", lab, ocr, fields=["text"], min_chars=4)
    assert reasons(lab) == ["too_short", "", ""]
    assert status(ocr) == ["kept"]


# ---- repetition ---------------------------------------------------------------------------------------------------


def test_repeated_block_counts_back_to_back_copies() -> None:
    assert repeated_block("the the the") == 3.0
    assert repeated_block("a man and a man and a man and a man") == pytest.approx(11 / 3)
    assert repeated_block("a dog on a dog on") == 2.0
    assert repeated_block("a dog on a couch") == 1.0
    assert repeated_block("") == 1.0 and repeated_block("dog") == 1.0


def test_repetition_drops_decoding_loops_in_every_field() -> None:
    loop = "a cat sitting on a mat with a hat with a hat with a hat with a hat"
    lab = make_labels([[0, 0, 10, 10]] * 3, scores=[0.9] * 3,
                      phrase=np.array(["dog dog dog", "a dog", "a dog"], dtype=object),
                      text=np.array(["", "a dog near a dog", loop], dtype=object),
                      texts=captions("a cat on a mat", loop))
    run("repetition", lab)
    assert reasons(lab) == ["repetition", "", "repetition"]
    assert verdicts(lab) == [("kept", ""), ("dropped", "repetition")]


# ---- phrase_blacklist ---------------------------------------------------------------------------------------------


def test_phrase_blacklist_default_extra_and_ontology_wins() -> None:
    phrases = ["it", "The background", "left side", "a man", "Things", "time", "object"]
    lab = make_labels([[0, 0, 10, 10]] * 7, scores=[0.9] * 7, classes=[""] * 7, phrase=np.array(phrases, dtype=object))
    run("phrase_blacklist", lab, ontology=["person", "object"], extra=["left side"])
    assert reasons(lab) == ["blacklisted", "blacklisted", "blacklisted", "", "blacklisted", "blacklisted", ""]
    lab = make_labels([[0, 0, 10, 10]] * 2, scores=[0.9] * 2, phrase=np.array(["it", "forklift"], dtype=object))
    run("phrase_blacklist", lab, words=["forklifts"])
    assert reasons(lab) == ["", "blacklisted"]


# ---- caption_parse (FLD-5B) ---------------------------------------------------------------------------------------

# hand-made parses: words, heads (absolute), dependency labels, coarse POS
PARSES = {
    "a red car parks on the street": (
        [2, 2, 3, 3, 3, 6, 4], ["det", "amod", "nsubj", "ROOT", "prep", "det", "pobj"],
        ["DET", "ADJ", "NOUN", "VERB", "ADP", "DET", "NOUN"]),
    "car": ([0], ["ROOT"], ["NOUN"]),
    "a cup , a plate and a fork": (
        [1, 1, 1, 4, 1, 1, 7, 1], ["det", "ROOT", "punct", "det", "conj", "cc", "det", "conj"],
        ["DET", "NOUN", "PUNCT", "DET", "NOUN", "CCONJ", "DET", "NOUN"]),
    "A dog runs on the grass .": (
        [1, 2, 2, 2, 5, 3, 2], ["det", "nsubj", "ROOT", "prep", "det", "pobj", "punct"],
        ["DET", "NOUN", "VERB", "ADP", "DET", "NOUN", "PUNCT"]),
}


def parsed(text: str):
    spacy = pytest.importorskip("spacy", reason="spaCy is not installed (pip install 'autolabel[text]')")
    from spacy.tokens import Doc

    heads, deps, pos = PARSES[text]
    return Doc(spacy.blank("en").vocab, words=text.split(), heads=heads, deps=deps, pos=pos)


def test_parse_measures_objects_and_actions() -> None:
    from autolabel.filters.parse import actions, mean_degree, objects, parse_verdict

    doc = parsed("a red car parks on the street")
    assert [t.text for t in objects(doc)] == ["car", "street"]
    assert mean_degree(objects(doc)) == 2.5  # car: a, red + head; street: the + head
    assert mean_degree(actions(doc)) == 2.0  # parks: car, on (the root has no head)
    assert parse_verdict(doc, 10, 1.0, 0.0) == ""
    assert parse_verdict(doc, 10, 1.0, 3.0) == "low_action_complexity"
    assert parse_verdict(doc, 10, 3.0, 0.0) == "low_object_complexity"
    assert parse_verdict(parsed("car"), 10, 1.0, 0.0) == "low_object_complexity"
    assert parse_verdict(parsed("a cup , a plate and a fork"), 2, 1.0, 0.0) == "too_many_objects"
    assert parse_verdict(parsed("a cup , a plate and a fork"), None, 1.0, 0.0) == ""


@pytest.fixture
def lookup_pipeline(tmp_path):
    spacy = pytest.importorskip("spacy", reason="spaCy is not installed (pip install 'autolabel[text]')")
    from spacy.language import Language
    from spacy.tokens import Doc

    if "test_lookup_parser" not in Language.factories:
        @Language.component("test_lookup_parser")
        def lookup(doc):
            heads, deps, pos = PARSES[" ".join(t.text for t in doc)]
            return Doc(doc.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc],
                       heads=heads, deps=deps, pos=pos)

    nlp = spacy.blank("en")
    nlp.add_pipe("test_lookup_parser")
    nlp.to_disk(tmp_path / "parser")
    spacy.blank("en").to_disk(tmp_path / "blank")
    return tmp_path


def test_caption_parse_stage_runs_the_pipeline_over_captions(lookup_pipeline) -> None:
    lab = make_labels([], texts=captions("a red car parks on the street", "car", "a cup , a plate and a fork"))
    run("caption_parse", lab, spacy_model=str(lookup_pipeline / "parser"), max_objects=2)
    assert verdicts(lab) == [("kept", ""), ("dropped", "low_object_complexity"), ("dropped", "too_many_objects")]


def test_caption_parse_without_a_parser_is_a_config_error(lookup_pipeline) -> None:
    with pytest.raises(ConfigError, match=r"^spacy_model: spaCy pipeline '.*blank' has no dependency parser"):
        build("caption_parse", spacy_model=str(lookup_pipeline / "blank"))
    with pytest.raises(ConfigError, match=r"^spacy_model: spaCy pipeline 'xx_missing_sm' is not installed"):
        build("caption_parse", spacy_model="xx_missing_sm")


def test_caption_parse_without_spacy_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy now raises ImportError
    with pytest.raises(ConfigError, match=r"^spacy_model: spaCy is not installed; caption_parse needs it \(pip"):
        build("caption_parse")


# ---- ocr_quality --------------------------------------------------------------------------------------------------


def test_quad_area_is_the_polygon_area() -> None:
    quads = np.array([[0, 0, 4, 0, 4, 3, 0, 3], [0, 0, 4, 0, 6, 3, 2, 3]], dtype=np.float64)  # rectangle, parallelogram
    np.testing.assert_allclose(quad_area(quads), [12.0, 12.0])


def test_ocr_quality_on_lines_and_page_text() -> None:
    quads = np.array([[0, 0, 40, 0, 40, 10, 0, 10], [0, 0, 2, 0, 2, 2, 0, 2], [0, 0, 40, 0, 40, 10, 0, 10],
                      [0, 0, 40, 0, 40, 10, 0, 10]], dtype=np.float32)
    lab = make_labels([[0, 0, 40, 10], [0, 0, 40, 10], [0, 0, 40, 10], [0, 0, 40, 10]], scores=[0.9, 0.9, 0.9, 0.3],
                      stage="reader", task="ocr", quad=quads,
                      text=np.array(["EXIT", "EXIT", " ", "EXIT"], dtype=object),
                      texts=captions(" ", kind="ocr") + captions("EXIT", kind="ocr") + captions("", kind="caption"))
    lab.texts[1].score = 0.2
    lab.add(make_labels([[0, 0, 1, 1]], scores=[0.1]).detections, stage="det", provenance={"task": "od"})
    run("ocr_quality", lab)
    # row 1: its 2x2 quad is 4 px² although its box is large; the detector's row (last) is not OCR
    assert reasons(lab) == ["", "small_quad", "too_short", "low_score", ""]
    assert verdicts(lab) == [("dropped", "too_short"), ("dropped", "low_score"), ("kept", "")]


def test_ocr_quality_reads_ragged_quads_and_falls_back_to_the_box() -> None:
    quad = np.empty(2, dtype=object)
    quad[0], quad[1] = [0, 0, 40, 0, 40, 10, 0, 10], None  # as a store round trip may give them back
    lab = make_labels([[0, 0, 40, 10], [0, 0, 2, 2]], scores=[0.9, 0.9], stage="reader", task="ocr_with_region",
                      quad=quad, text=np.array(["A1", "B2"], dtype=object))
    run("ocr_quality", lab, make_labels([]))
    assert reasons(lab) == ["", "small_quad"]
