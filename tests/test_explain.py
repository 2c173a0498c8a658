"""Label probabilities, attention shares, the heatmap, generation and chat."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from emotion_llama import model as model_module
from emotion_llama.config import official, tiny
from emotion_llama.explain import attention_shares, explain_answer, modality_shares, visual_heatmap
from emotion_llama.pipeline import AnalysisOptions, Engine
from emotion_llama.vocab import MER2023_LABELS, MERR_LABELS, GenerationSettings

SAMPLING = GenerationSettings(do_sample=True, max_new_tokens=12, seed=5)


@pytest.fixture(scope="module")
def engine(tiny_model):
    return Engine(tiny_model, {"weights": "tiny (random)", "device": "cpu", "dtype": "float32"})


@pytest.mark.parametrize("labels", [MER2023_LABELS, MERR_LABELS, ("calm", "excited", "bored")])
def test_label_probabilities_sum_to_one_and_argmax_is_the_label(engine, prepared_clip, labels):
    analysis = engine.analyze(prepared_clip, options=AnalysisOptions(labels=labels, explain=False,
                                                                     generation=GenerationSettings(do_sample=False, max_new_tokens=4)))
    assert list(analysis.probabilities) == list(labels)
    assert abs(sum(analysis.probabilities.values()) - 1.0) < 1e-5
    assert all(0.0 <= p <= 1.0 for p in analysis.probabilities.values())
    assert analysis.label == max(analysis.probabilities, key=analysis.probabilities.get)


def test_label_probabilities_follow_the_llm_likelihood(engine, prepared_clip):
    """The probability of a label is the softmax of the LLM's own answer likelihoods."""
    model = engine.model
    projected = model.project(model.encode(prepared_clip))
    probs = engine.label_probabilities(projected, "hello", ("happy", "sad"), demo_parity=False)
    from emotion_llama.prompts import answer_pieces, first_turn, user_turn

    prompt = first_turn(user_turn("emotion", subtitle="hello", labels=("happy", "sad")))
    scores = []
    for label in ("happy", "sad"):  # one sequence at a time, no padding
        seq = model.assemble(prompt + answer_pieces(label, close=True), projected)
        with torch.no_grad():
            logp = torch.log_softmax(model.llama_model(inputs_embeds=seq.inputs_embeds).logits[0].float(), -1)
        kinds = seq.kind_at()
        scores.append(sum(float(logp[i - 1, seq.token_ids[i]]) for i, k in enumerate(kinds) if k in ("answer", "eos")))
    expected = np.exp(scores) / np.exp(scores).sum()
    assert probs["happy"] == pytest.approx(expected[0], abs=1e-5)


def test_whole_result_is_deterministic_with_a_seed(engine, prepared_clip):
    options = AnalysisOptions(task="reason", generation=SAMPLING)
    first = engine.analyze(prepared_clip, options=options).to_json()
    second = engine.analyze(prepared_clip, options=options).to_json()
    first.pop("timings"), second.pop("timings")
    assert first == second
    assert first["answer"]  # sampling produced text


def test_attention_shares_of_a_real_pass_sum_to_one(engine, prepared_clip):
    analysis = engine.analyze(prepared_clip, options=AnalysisOptions(generation=GenerationSettings(do_sample=False, max_new_tokens=6)))
    assert abs(sum(analysis.span_attention.values()) - 1.0) < 1e-6
    assert abs(sum(analysis.modality_attention.values()) - 1.0) < 1e-6
    assert {"global frame", "face", "face sequence", "audio", "subtitle"} <= set(analysis.modality_attention)
    assert analysis.heatmap.shape == (224, 224)
    overlay = analysis.overlay()
    assert overlay.shape == prepared_clip.global_frame.shape and overlay.dtype == np.uint8


def full_map_explanation(model, sequence) -> tuple[dict[str, float], np.ndarray]:
    """The explanation as it was computed before the one-layer-at-a-time pass: every
    layer's eager map at once, answer rows over the prompt keys (BOS dropped, rows
    renormalised), averaged over rows and layers."""
    maps = model_module.full_attention_maps(model, sequence)
    kinds = sequence.kind_at()
    queries = [i for i, k in enumerate(kinds) if k == "answer"]
    keys = [i for i, k in enumerate(kinds) if k not in ("bos", "eos", "answer")]
    rows = maps[:, queries][:, :, keys].double()
    weights = (rows / rows.sum(dim=-1, keepdim=True)).mean(dim=(0, 1)).numpy()
    shares: dict[str, float] = {}
    for position, weight in zip(keys, weights):
        shares[kinds[position]] = shares.get(kinds[position], 0.0) + float(weight)
    visual = np.array([w for position, w in zip(keys, weights) if kinds[position] == "visual"])
    return shares, visual_heatmap(visual, model.config.visual_grid, model.config.global_vision["patch_size"])


@pytest.fixture(scope="module")
def gqa_model(tiny_model):
    """A tiny random model whose LLM shares each key/value head between two query heads,
    with non-zero LoRA weights (fresh LoRA is a no-op) so that skipping LoRA would show."""
    from emotion_llama.model import EmotionLlama

    config = tiny(vocab_size=len(tiny_model.tokenizer))
    config = replace(config, llm={**config.llm, "num_key_value_heads": 2})
    torch.manual_seed(3)
    model = EmotionLlama(config, tokenizer=tiny_model.tokenizer).eval()
    with torch.no_grad():
        for name, weight in model.llama_model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0.0, 0.05)
    return model


def explained_sequence(model, clip):
    from emotion_llama.prompts import answer_pieces, first_turn, user_turn

    answer = "The person looks worried: the voice trembles and the brows are raised, so the label is worried."
    prompt = first_turn(user_turn("reason", subtitle=clip.subtitle.text))
    return model.assemble(prompt + answer_pieces(answer), model.project(model.encode(clip)))


@pytest.mark.parametrize("which", ["tiny_model", "gqa_model"])
@pytest.mark.parametrize("rows_per_block", [128, 7])
def test_one_layer_at_a_time_gives_the_full_map_numbers(which, rows_per_block, request, prepared_clip, monkeypatch):
    model = request.getfixturevalue(which)
    monkeypatch.setattr(model_module, "ROWS_PER_BLOCK", rows_per_block)
    sequence = explained_sequence(model, prepared_clip)
    assert sequence.kind_at().count("answer") > 2 * 7  # several blocks when 7 rows a block
    before_shares, before_heat = full_map_explanation(model, sequence)
    now = explain_answer(model, sequence)
    assert set(now.span_shares) == set(before_shares)
    for kind, share in before_shares.items():
        assert now.span_shares[kind] == pytest.approx(share, abs=1e-7)
    np.testing.assert_allclose(now.heatmap, before_heat, rtol=1e-6, atol=0)


@pytest.mark.parametrize("which", ["tiny_model", "gqa_model"])
def test_the_rows_handed_over_are_eager_attention_rows(which, request, prepared_clip, monkeypatch):
    """Every layer's rows of the asked positions, causal softmax included, as eager computes them."""
    model = request.getfixturevalue(which)
    monkeypatch.setattr(model_module, "ROWS_PER_BLOCK", 5)
    sequence = explained_sequence(model, prepared_clip)
    positions = [0, 3, 40, 41, 42, 90, len(sequence) - 2, len(sequence) - 1]
    blocks: list[torch.Tensor] = []
    model.attention_rows(sequence, positions, blocks.append)
    assert all(len(block) <= 5 for block in blocks)
    rows = torch.cat(blocks).view(model.config.llm["num_hidden_layers"], len(positions), len(sequence))
    eager = model_module.full_attention_maps(model, sequence)[:, positions]
    torch.testing.assert_close(rows, eager, rtol=1e-5, atol=1e-7)
    assert rows[:, 1, 4:].abs().max() == 0  # position 3 sees nothing after itself


def test_the_rows_pass_goes_through_lora_and_grouped_heads(gqa_model, prepared_clip):
    llm_config = gqa_model.llama_model.get_base_model().config
    assert llm_config.num_key_value_heads < llm_config.num_attention_heads
    sequence = explained_sequence(gqa_model, prepared_clip)
    with_lora = explain_answer(gqa_model, sequence).span_shares
    with gqa_model.llama_model.disable_adapter():
        without_lora = explain_answer(gqa_model, sequence).span_shares
    assert max(abs(with_lora[k] - without_lora[k]) for k in with_lora) > 1e-4


def test_the_attention_implementation_is_restored_also_after_an_error(tiny_model, prepared_clip):
    base = tiny_model.llama_model.get_base_model()
    before = base.config._attn_implementation
    sequence = explained_sequence(tiny_model, prepared_clip)

    def fail(rows):
        raise RuntimeError("consumer failed")

    with pytest.raises(RuntimeError, match="consumer failed"):
        tiny_model.attention_rows(sequence, [len(sequence) - 1], fail)
    assert base.config._attn_implementation == before
    explain_answer(tiny_model, sequence)
    assert base.config._attn_implementation == before


def synthetic_attention(kinds: list[str], target: str, sink: float = 0.0) -> torch.Tensor:
    """Causal rows that put ``sink`` on BOS and the rest on the positions of ``target``."""
    n = len(kinds)
    attn = torch.zeros(3, n, n)
    targets = [i for i, k in enumerate(kinds) if k == target]
    for q in range(n):
        allowed = [i for i in targets if i <= q] or [q]
        attn[:, q, allowed] = (1.0 - sink) / len(allowed)
        attn[:, q, 0] += sink
    return attn


@pytest.mark.parametrize("target", ["visual", "face", "audio", "subtitle", "instruction"])
def test_all_mass_on_one_span_reports_that_span_at_one(target):
    kinds = ["bos"] + ["template"] * 3 + ["visual"] * 8 + ["face", "temporal", "audio", "cls"] + ["subtitle"] * 5 \
        + ["instruction"] * 4 + ["template"] * 2 + ["answer"] * 3
    shares = attention_shares(synthetic_attention(kinds, target, sink=0.6), kinds)
    assert shares[target] == pytest.approx(1.0, abs=1e-12)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12)
    assert "bos" not in shares and "answer" not in shares


def test_modality_shares_merge_visual_and_cls():
    shares = modality_shares({"visual": 0.25, "cls": 0.05, "face": 0.1, "audio": 0.6})
    assert shares["global frame"] == pytest.approx(0.30) and shares["audio"] == 0.6


def test_heatmap_of_one_visual_token_lights_its_1x4_patch_cell():
    cfg = official()
    rows, cols = cfg.visual_grid
    assert (rows, cols) == (32, 8)
    token = 8 * 5 + 3  # grid row 5, patch columns 12..15
    weights = np.zeros(rows * cols)
    weights[token] = 1.0
    heat = visual_heatmap(weights, cfg.visual_grid, cfg.global_vision["patch_size"])
    assert heat.shape == (448, 448)
    ys, xs = np.nonzero(heat)
    assert (ys.min(), ys.max() + 1) == (5 * 14, 6 * 14)
    assert (xs.min(), xs.max() + 1) == (12 * 14, 16 * 14)
    assert heat.sum() == 14 * 56


def test_streaming_grows_and_ends_with_the_full_answer(engine, prepared_clip):
    from emotion_llama.prompts import first_turn, user_turn

    model = engine.model
    seq = model.assemble(first_turn(user_turn("reason", subtitle="hi")), model.project(model.encode(prepared_clip)))
    settings = GenerationSettings(do_sample=False, max_new_tokens=10)
    parts = list(engine.writer.stream(seq, settings))
    assert all(b.startswith(a.strip()[:1]) or not a for a, b in itertools.pairwise(parts))
    assert parts[-1] == model.tokenizer.decode(model.generate(seq, settings), skip_special_tokens=True).strip()


def test_missing_modalities_still_run_and_are_reported(engine, prepared_clip):
    from dataclasses import replace

    bare = replace(prepared_clip, face_crops=prepared_clip.face_crops[:0], face_sequence=prepared_clip.face_sequence[:0], audio=None)
    result = engine.analyze(bare, options=AnalysisOptions(generation=GenerationSettings(do_sample=False, max_new_tokens=4)))
    assert result.modalities_present == {"global": True, "face": False, "temporal": False, "audio": False, "subtitle": True}
    assert result.filled_modalities["face"] == "missing: zeros"
    left_out = engine.analyze(prepared_clip, options=AnalysisOptions(leave_out=("audio", "subtitle"),
                                                                     generation=GenerationSettings(do_sample=False, max_new_tokens=4)))
    assert left_out.modalities_present["audio"] is False and left_out.filled_modalities["audio"] == "left out: zeros"
    assert left_out.modalities_present["subtitle"] is False and "subtitle" not in left_out.span_attention
