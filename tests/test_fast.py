"""Faster inference gives the same answers: LoRA merged at load time, and label scoring
from one shared prompt prefix. All on CPU in fp32 (fp16's tolerance: ``EmotionLlama.merge_lora``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from emotion_llama.analysis import AnalysisOptions
from emotion_llama.errors import MergedWeightsError
from emotion_llama.explain import probabilities_from_scores
from emotion_llama.model import whole_sequence_log_likelihoods
from emotion_llama.pipeline import TINY_WEIGHTS, Engine, answer_prompt, load_engine, random_tiny_model
from emotion_llama.prompts import answer_pieces, first_turn, user_turn
from emotion_llama.vocab import MER2023_LABELS, MERR_LABELS, GenerationSettings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = json.loads((ROOT / "examples" / "examples.json").read_text())
# Labels of one, two and several tokens in every tokenizer here, so the answer rows pad differently.
UNEVEN_LABELS = ("calm", "deeply embarrassed", "quietly furious but polite", "awe")
LABEL_SETS = {"merr": MERR_LABELS, "mer2023": MER2023_LABELS, "uneven": UNEVEN_LABELS}
REASONING = GenerationSettings(do_sample=False, max_new_tokens=40, min_new_tokens=40)
LABEL_ANSWER = GenerationSettings(do_sample=False, max_new_tokens=8)


def probabilities_the_old_way(model, projected, subtitle, labels) -> dict[str, float]:
    """Every whole sequence (prompt + label + ``</s>``) run in full, as scoring did before."""
    prompt = first_turn(user_turn("emotion", subtitle=subtitle, labels=labels))
    sequences = [model.assemble(prompt + answer_pieces(label, close=True), projected) for label in labels]
    return probabilities_from_scores(labels, whole_sequence_log_likelihoods(model, sequences))


@pytest.fixture(scope="module")
def shipped():
    from emotion_llama.checkpoints import from_pretrained

    return from_pretrained(TINY_WEIGHTS)


@pytest.mark.parametrize("weights", ["random", "shipped"])
@pytest.mark.parametrize("label_set", LABEL_SETS)
def test_shared_prefix_scoring_equals_scoring_whole_sequences(weights, label_set, request, prepared_clip):
    model = request.getfixturevalue("tiny_model" if weights == "random" else "shipped")
    labels = LABEL_SETS[label_set]
    lengths = {len(model.tokenizer(label, add_special_tokens=False)["input_ids"]) for label in labels}
    if label_set == "uneven":
        assert len(lengths) >= 3, lengths
    engine = Engine(model, {})
    projected = model.project(engine.prepare(prepared_clip)[1])
    subtitle = prepared_clip.subtitle.text
    shared = engine.label_probabilities(projected, subtitle, labels)
    old = probabilities_the_old_way(model, projected, subtitle, labels)
    assert list(shared) == list(labels)
    assert max(abs(shared[x] - old[x]) for x in labels) < 1e-5, (shared, old)
    assert abs(sum(shared.values()) - 1) < 1e-5


@pytest.fixture(scope="module")
def merged_and_not(shipped):
    merged = load_engine(str(TINY_WEIGHTS), device="cpu")
    assert merged.model.lora_merged and not shipped.lora_merged
    return merged, Engine(shipped, {})


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e["clip"])
def test_merged_lora_gives_the_same_tokens_on_every_example(merged_and_not, example):
    merged, unmerged = merged_and_not
    options = AnalysisOptions(task=example["task"], question=example["question"] or None, generation=REASONING)
    prepared, encoded = merged.prepare(ROOT / "examples" / example["clip"], example["subtitle"], options)
    words = prepared.subtitle.text
    label_prompt = first_turn(user_turn("emotion", subtitle=words))
    answers = []
    for engine in (merged, unmerged):
        projected = engine.model.project(encoded)
        probabilities = engine.label_probabilities(projected, words, MERR_LABELS)
        label = max(probabilities, key=probabilities.get)
        label_ids = engine.model.generate(engine.model.assemble(label_prompt, projected), LABEL_ANSWER)
        task_ids = engine.model.generate(engine.model.assemble(answer_prompt(options, label, words), projected),
                                         REASONING)
        answers.append((probabilities, label_ids, task_ids))
    (p_merged, label_merged, task_merged), (p_plain, label_plain, task_plain) = answers
    assert max(abs(p_merged[x] - p_plain[x]) for x in MERR_LABELS) < 1e-5
    assert label_merged == label_plain and task_merged == task_plain
    assert len(task_merged) == REASONING.max_new_tokens


def test_a_merged_chat_gives_the_same_replies(merged_and_not):
    example = ROOT / "examples" / "two_people.mp4"
    replies = []
    for engine in merged_and_not:
        session = engine.chat(example)
        turns = [list(session.ask(question, settings=REASONING))[-1]
                 for question in ("Who is speaking?", "What does her face show?")]
        replies.append(turns)
    assert replies[0] == replies[1] and all(replies[0])


def test_a_merged_model_refuses_to_be_saved_trained_or_loaded_into(tmp_path):
    from emotion_llama.checkpoints import load_trainable_state, save_pretrained

    model = random_tiny_model().merge_lora()
    with pytest.raises(MergedWeightsError, match="cannot be saved"):
        save_pretrained(model, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    with pytest.raises(MergedWeightsError, match="cannot be trained"):
        model.train()
    with pytest.raises(MergedWeightsError, match="from_pretrained"):
        load_trainable_state(model, {})
    assert not model.eval().training


def test_merging_moves_each_tuned_weight_by_its_lora_product():
    """The merge is real: each LoRA-tuned base weight moves by scaling * B @ A, nothing else moves."""
    model = random_tiny_model()
    with torch.no_grad():  # a fresh model's B is zero, as peft initialises it
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.02)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.merge_lora()
    after = model.state_dict()
    moved = {k for k, v in after.items() if not torch.equal(v, before[k])}
    tuned = {k for k in before if k.endswith(".base_layer.weight")}
    assert moved == tuned and tuned
    lora = model.config.lora
    for key in tuned:
        stem = key.removesuffix("base_layer.weight")
        product = before[stem + "lora_B.default.weight"] @ before[stem + "lora_A.default.weight"]
        torch.testing.assert_close(after[key] - before[key], product * lora.alpha / lora.r, atol=1e-6, rtol=1e-4)
