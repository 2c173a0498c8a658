"""Assembled sequences carry exact spans; untrusted text cannot move them."""

from __future__ import annotations

import pytest

from emotion_llama.prompts import (
    RESERVED_MARKERS,
    answer_pieces,
    escape_user_text,
    first_turn,
    reason_after_label,
    user_turn,
)

INJECTIONS = ["<VideoHere>", "<FeatureHere>", "[INST]", "[/INST]", "</s>", "<s>"]
SLOTS = ("visual", "face", "temporal", "audio", "cls")


def n_tokens(model, text: str) -> int:
    return len(model.tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.fixture()
def projected(tiny_model, prepared_clip):
    return tiny_model.project(tiny_model.encode(prepared_clip))


def test_trained_layout_positions(tiny_model, projected):
    seq = tiny_model.assemble(first_turn(user_turn("emotion", subtitle="I like the way you are now")), projected)
    n_visual = tiny_model.config.num_visual_tokens
    open_video = n_tokens(tiny_model, "[INST] <video>")
    between = n_tokens(tiny_model, "</video> <feature>")
    spans = {s.kind: s for s in seq.spans if s.kind in SLOTS}
    assert seq.spans[0].kind == "bos" and len(seq.spans[0]) == 1
    assert spans["visual"].start == 1 + open_video
    assert len(spans["visual"]) == n_visual == 64
    assert spans["face"].start == spans["visual"].end + between
    assert [spans[k].start for k in ("face", "temporal", "audio", "cls")] == list(
        range(spans["face"].start, spans["face"].start + 4)
    )
    assert seq.token_ids[spans["visual"].start - open_video : spans["visual"].start] == tiny_model.tokenizer(
        "[INST] <video>", add_special_tokens=False
    )["input_ids"]
    after_cls = tiny_model.tokenizer.decode(seq.token_ids[spans["cls"].end : spans["cls"].end + 3])
    assert after_cls.strip().startswith("</feature>")
    assert seq.inputs_embeds.shape[1] == len(seq) == len(seq.token_ids)


def test_demo_parity_layout_puts_all_260_style_tokens_at_video(tiny_model, projected):
    seq = tiny_model.assemble(first_turn(user_turn("emotion", subtitle="hello"), demo_parity=True), projected)
    kinds = seq.kind_at()
    start = 1 + n_tokens(tiny_model, "[INST] <video>")
    block = tiny_model.config.num_visual_tokens + 4
    assert kinds[start : start + block] == ["visual"] * 64 + ["face", "temporal", "audio", "cls"]
    tail = tiny_model.tokenizer.decode(seq.token_ids[start + block : start + block + 12])
    assert tail.replace(" ", "").startswith("</video><feature><FeatureHere></feature>")


def test_demo_parity_zeroes_face_and_temporal(tiny_model, prepared_clip):
    encoded = tiny_model.encode(prepared_clip, demo_parity=True)
    assert not encoded.present["face"] and not encoded.present["temporal"]
    assert float(encoded.features["face"].abs().sum()) == 0.0 and float(encoded.features["temporal"].abs().sum()) == 0.0
    assert encoded.present["audio"] and encoded.present["global"]


def test_spans_cover_every_position_and_label_user_text(tiny_model, projected):
    seq = tiny_model.assemble(
        first_turn(user_turn("reason", subtitle="Won't you? Impossible!")) + answer_pieces("angry"), projected
    )
    assert seq.spans[0].start == 0 and seq.spans[-1].end == len(seq)
    assert all(a.end == b.start for a, b in zip(seq.spans, seq.spans[1:]))
    [subtitle] = seq.spans_of("subtitle")
    text = tiny_model.tokenizer.decode(seq.token_ids[subtitle.start : subtitle.end])
    assert text.strip() == "Won't you? Impossible!"
    [answer] = seq.spans_of("answer")
    assert tiny_model.tokenizer.decode(seq.token_ids[answer.start : answer.end]).strip() == "angry"


@pytest.mark.parametrize("where", ["subtitle", "question"])
@pytest.mark.parametrize("attack", INJECTIONS)
def test_injection_leaves_spans_unchanged(tiny_model, projected, attack, where):
    def build(text):
        if where == "subtitle":
            return first_turn(user_turn("emotion", subtitle=text))
        return first_turn(user_turn("free", subtitle="hi", question=text))

    clean = tiny_model.assemble(build("Oh no"), projected)
    hostile = tiny_model.assemble(build(f"Oh {attack} no {attack}"), projected)
    # Slots sit at the same positions, in the same order, with the same sizes.
    assert [(s.kind, s.start, s.end) for s in hostile.spans if s.kind in SLOTS + ("bos",)] == [
        (s.kind, s.start, s.end) for s in clean.spans if s.kind in SLOTS + ("bos",)
    ]
    assert [s.kind for s in hostile.spans] == [s.kind for s in clean.spans]
    tok = tiny_model.tokenizer
    assert hostile.token_ids.count(tok.bos_token_id) == 1 and tok.eos_token_id not in hostile.token_ids
    close = tok("[/INST]", add_special_tokens=False)["input_ids"]
    ids = hostile.token_ids
    occurrences = sum(ids[i : i + len(close)] == close for i in range(len(ids)))
    assert occurrences == 1
    assert "<VideoHere>" not in tok.decode([i for i in hostile.token_ids if i >= 0])


def test_escape_keeps_text_readable_and_inert():
    for marker in RESERVED_MARKERS:
        escaped = escape_user_text(f"say {marker} now")
        assert marker not in escaped and escaped.startswith("say ") and escaped.endswith(" now")
    assert escape_user_text("[emotion] tag") == "(emotion) tag"
    assert escape_user_text("plain words, no markers") == "plain words, no markers"


def test_reason_after_label_is_a_second_turn_after_the_label(tiny_model, projected):
    pieces = reason_after_label("fear", subtitle="Is someone there?", label_kind="answer")
    seq = tiny_model.assemble(pieces + answer_pieces("The voice trembles.", close=True), projected)
    tok = tiny_model.tokenizer
    # Two chat turns: two <s>, the label closed with </s>, then the reasoning and its </s>.
    assert seq.token_ids.count(tok.bos_token_id) == 2 and seq.token_ids.count(tok.eos_token_id) == 2
    answers = [tok.decode(seq.token_ids[s.start : s.end]).strip() for s in seq.spans_of("answer")]
    assert answers == ["fear", "The voice trembles."]
    # The clip's slots and its subtitle appear once, in the first turn, before the label.
    assert len(seq.spans_of("subtitle")) == 1 and len(seq.spans_of("visual")) == 1
    assert seq.spans_of("subtitle")[0].end < seq.spans_of("answer")[0].start
    text = tok.decode([i for i in seq.token_ids if i >= 0])
    assert text.index("[emotion]") < text.index("fear") < text.index("[reason]")
    # At inference the label is history: not a training target, and not user text.
    history = reason_after_label("fear", subtitle="Is someone there?")
    assert [p.kind for p in history if p.text == "fear"] == ["history"]


# -- the exact training text of the official weights ---------------------------------------------
def reference_training_text(task: str, instruction: str, sentence: str | None) -> str:
    """The reference dataset code's text, in LLaMA-2's ``[INST] {} [/INST]``, written out literally."""
    line = f"The person in video says: {sentence}. " if sentence else ""
    text = f"<video><VideoHere></video> <feature><FeatureHere></feature> {line} [{task}] {instruction} "
    return f"<s>[INST] {text} [/INST]"


class Pick:
    """A random source that draws ``item``."""

    def __init__(self, item: str):
        self.item = item

    def choice(self, items):
        assert self.item in items
        return self.item


@pytest.mark.parametrize("sentence", [None, "I lost my keys again"])
def test_the_official_preset_renders_the_reference_training_text_for_every_task(sentence):
    from emotion_llama.config import official, tiny
    from emotion_llama.processor import prompt_text
    from emotion_llama.prompts import REASON_INSTRUCTIONS, instruction_for

    assert official().reference_spacing and not tiny().reference_spacing
    cases = [("emotion", instruction_for("emotion"), None), ("visual", instruction_for("visual"), None),
             ("audio", instruction_for("audio"), None)]
    cases += [("reason", text, Pick(text)) for text in REASON_INSTRUCTIONS]  # each of the five, drawn on purpose
    for task, instruction, rng in cases:
        pieces = first_turn(user_turn(task, subtitle=sentence, rng=rng))
        assert prompt_text(pieces, reference_spacing=True) == reference_training_text(task, instruction, sentence)
        # The tiny model keeps the layout it was trained on: one space each.
        single = prompt_text(pieces, reference_spacing=False)
        assert f"  [{task}]" not in single and "  [/INST]" not in single


def test_the_official_spacing_reaches_the_tokens_as_the_reference_tokenises_them(tiny_model, projected):
    from emotion_llama.processor import Processor

    processor = Processor(tiny_model.tokenizer, tiny_model.llama_model.get_input_embeddings(), reference_spacing=True)
    sequence = processor(first_turn(user_turn("emotion", subtitle="I lost my keys again")), projected)
    after_features = max(span.end for span in sequence.spans if span.kind == "cls")
    expected = tiny_model.tokenizer("</feature> The person in video says: I lost my keys again.  [emotion] "
                                    + user_turn("emotion", subtitle=None)[-2].text + "  [/INST]",
                                    add_special_tokens=False)["input_ids"]
    assert sequence.token_ids[after_features:] == expected
    plain = tiny_model.assemble(first_turn(user_turn("emotion", subtitle="I lost my keys again")), projected)
    assert len(plain) < len(sequence)  # the shipped tiny model reads its own, single-spaced layout
