"""The per-row generation controls transformers lacks, on plain tensors."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mineru_fit.engines.builtin.jobs import SamplingKey  # noqa: E402
from mineru_fit.engines.builtin.sampling import NgramBan, RowSampler, presence_frequency, repetition, warp  # noqa: E402


def key(**values) -> SamplingKey:
    return SamplingKey.from_request(**values)


def test_no_repeat_ngram_bans_only_repeats_in_the_output_not_the_prompt() -> None:
    ban = NgramBan(3)
    assert ban.banned([1, 2, 3, 1, 2]) == {3}      # "1 2 3" seen: after "1 2", 3 is banned
    fresh = NgramBan(3)
    assert fresh.banned([7, 8, 4, 5, 6]) == set()  # a prompt's n-grams are never fed to it


def test_no_repeat_ngram_keeps_state_across_steps() -> None:
    ban = NgramBan(2)
    seq: list[int] = []
    for token in [5, 6, 5]:
        seq.append(token)
        banned = ban.banned(seq)
    assert banned == {6}  # "5 6" happened: after 5, 6 is banned


def test_presence_and_frequency_penalties_follow_openai() -> None:
    scores = presence_frequency(torch.zeros(10), [2, 2, 3], presence=1.0, frequency=0.5)
    assert scores[2] == pytest.approx(-(1.0 + 2 * 0.5))
    assert scores[3] == pytest.approx(-(1.0 + 0.5))
    assert scores[9] == 0  # tokens not in the output are not penalised


def test_repetition_penalty_shrinks_seen_logits_towards_zero() -> None:
    scores = repetition(torch.tensor([2.0, -2.0, 2.0]), torch.tensor([0, 1]), 2.0)
    assert scores.tolist() == [1.0, -4.0, 2.0]


def test_top_k_and_top_p_keep_only_the_likely_tokens() -> None:
    scores = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.isfinite(warp(scores, key(temperature=1.0, top_k=2))).tolist() == [True, True, False, False]
    assert torch.isfinite(warp(scores, key(temperature=1.0, top_p=0.7))).tolist() == [True, True, False, False]


def test_ignore_eos_never_picks_eos_and_greedy_takes_the_best() -> None:
    scores = torch.tensor([0.0, 5.0, 1.0])
    assert RowSampler(key(temperature=0), torch.tensor([0]), (1,), None, torch.device("cpu")).next_token(scores, []) == 1
    sampler = RowSampler(key(temperature=0, ignore_eos=True), torch.tensor([0]), (1,), None, torch.device("cpu"))
    assert sampler.next_token(scores, []) == 2


def test_a_row_seed_fixes_its_draws_whatever_else_is_drawn() -> None:
    scores = torch.zeros(50)

    def draws(seed: int) -> list[int]:
        sampler = RowSampler(key(temperature=1.0), torch.tensor([0]), (), seed, torch.device("cpu"))
        torch.rand(1000)  # other rows' draws use the global generator, or their own
        return [sampler.next_token(scores, []) for _ in range(8)]

    assert draws(5) == draws(5) and draws(5) != draws(6)
