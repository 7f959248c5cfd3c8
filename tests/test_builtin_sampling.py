"""The generation controls transformers lacks, on plain tensors."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mineru_fit.engines.builtin.sampling import (  # noqa: E402
    NoRepeatNgramOnOutput,
    PerRowMaxNewTokens,
    PresenceFrequencyPenalty,
)


def test_no_repeat_ngram_bans_only_repeats_in_the_output_not_the_prompt() -> None:
    prompt = [7, 8, 9, 7, 8]  # the prompt's "7 8 -> 9" must not ban 9
    proc = NoRepeatNgramOnOutput(prompt_width=len(prompt), ngram_size=3, batch_size=2)
    out_a = [1, 2, 3, 1, 2]   # "1 2 3" seen: after "1 2", 3 is banned
    out_b = [7, 8]
    ids = torch.tensor([prompt + out_a, prompt + out_b + [4, 5, 6]])
    scores = proc(ids, torch.zeros(2, 10))
    assert scores[0, 3] == -float("inf") and torch.isfinite(scores[0, torch.arange(10) != 3]).all()
    assert torch.isfinite(scores[1]).all()


def test_no_repeat_ngram_keeps_state_across_steps() -> None:
    proc = NoRepeatNgramOnOutput(prompt_width=0, ngram_size=2, batch_size=1)
    seq: list[int] = []
    for token in [5, 6, 5]:
        seq.append(token)
        scores = proc(torch.tensor([seq]), torch.zeros(1, 8))
    assert scores[0, 6] == -float("inf")  # "5 6" happened: after 5, 6 is banned


def test_presence_and_frequency_penalties_follow_openai() -> None:
    proc = PresenceFrequencyPenalty(prompt_width=1, presence=1.0, frequency=0.5)
    scores = proc(torch.tensor([[9, 2, 2, 3]]), torch.zeros(1, 10))
    assert scores[0, 2] == pytest.approx(-(1.0 + 2 * 0.5))
    assert scores[0, 3] == pytest.approx(-(1.0 + 0.5))
    assert scores[0, 9] == 0  # prompt tokens are not penalised


def test_each_row_stops_at_its_own_max_tokens() -> None:
    stop = PerRowMaxNewTokens(prompt_width=2, limits=[1, 3])
    assert stop(torch.zeros(2, 3, dtype=torch.long), None).tolist() == [True, False]
    assert stop(torch.zeros(2, 5, dtype=torch.long), None).tolist() == [True, True]
