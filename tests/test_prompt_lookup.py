"""Drafts from the prompt, the pure logic (chatllm.engines.llamacpp.prompt_lookup): what is proposed, what decodes
cost, and when drafting pays. No model: the engine's use of it is in tests/test_drafts_batches.py."""

from __future__ import annotations

import pytest

from chatllm.engines.llamacpp.prompt_lookup import MARGIN, DecodeCosts, Drafter, NgramIndex


def test_the_longest_earlier_ngram_gives_what_followed_it():
    index = NgramIndex([1, 2, 3, 4, 5, 6, 9, 9, 2, 3])
    assert index.propose(3) == ([4, 5, 6], 2)  # "2 3" was followed by 4 5 6
    index.append(4)
    assert index.propose(2) == ([5, 6], 3)  # now "2 3 4" matches, longer
    assert NgramIndex([1, 2, 3]).propose(4) == ([], 0)  # nothing repeats
    assert NgramIndex([7, 8, 1, 7, 8]).propose(5) == ([1, 7, 8], 2)  # a continuation may run up to the end


def test_the_latest_occurrence_wins():
    assert NgramIndex([5, 6, 1, 5, 6, 2, 5, 6]).propose(1) == ([2], 2)


def test_a_single_token_match_proposes_nothing():
    assert NgramIndex([4, 7, 8, 4]).propose(3) == ([], 0)


def test_decode_costs_are_measured_interpolated_and_extrapolated():
    costs = DecodeCosts()
    assert costs.estimate(4) is None and costs.single() is None
    costs.add(1, 0.010)
    assert costs.estimate(3) == pytest.approx(0.010 * (1 + 0.6 * 2))  # the prior slope, until a batch is timed
    costs.add(5, 0.030)
    assert costs.estimate(3) == pytest.approx(0.020)  # between 1 and 5
    assert costs.estimate(9) == pytest.approx(0.030 + 0.005 * 4)  # the measured slope beyond the largest size
    costs.add(5, 0.050)  # an average that moves toward newer timings
    assert 0.030 < costs.estimate(5) < 0.050
    assert costs.ratio(5) == pytest.approx(costs.estimate(5) / 0.010)


def copying_drafter(ratio_per_token: float) -> Drafter:
    """A drafter over a prompt the reply will copy, on an engine whose decodes cost `ratio_per_token` a token."""
    costs = DecodeCosts()
    costs.add(1, 1.0)
    for n in range(2, 18):
        costs.add(n, 1.0 + ratio_per_token * (n - 1))
    return Drafter(list(range(100, 140)) + [100, 101], costs)


def test_cheap_verifies_draft_and_drafts_that_hold_grow_longer():
    drafter = copying_drafter(0.1)
    first = drafter.propose(room=16)
    assert first[:3] == [102, 103, 104]
    for _ in range(3):
        drafter.verified(len(first), len(first))  # every drafted token held
    assert len(drafter.propose(room=16)) > len(first) and len(drafter.propose(room=16)) >= 10


def test_when_a_batch_costs_its_steps_nothing_is_drafted_and_acceptance_is_still_learned():
    drafter = copying_drafter(1.0)  # n tokens cost n steps: no draft can pay, whatever holds
    assert drafter.propose(room=16) == []
    before = drafter.acceptance
    for token in range(102, 110):  # the reply copies: the shadow draft is checked for free
        drafter.push(token)
        drafter.propose(room=16)
    assert drafter.acceptance > before


def test_drafting_stops_where_drafts_fail_and_resumes_where_the_reply_copies_again():
    drafter = copying_drafter(0.3)
    assert drafter.propose(room=16)
    for _ in range(4):
        drafter.verified(8, 0)  # every draft rejected at once
    assert drafter.propose(room=16) == []
    for token in range(102, 140):  # the reply copies the prompt for a while: shadows hold
        drafter.push(token)
        drafter.propose(room=16)
    drafter.push(100)
    drafter.push(101)
    assert drafter.propose(room=16)[:2] == [102, 103]


def test_no_room_no_draft_and_no_timing_no_draft():
    assert copying_drafter(0.1).propose(room=0) == []
    assert Drafter([1, 2, 3, 1, 2], DecodeCosts()).propose(room=8) == []  # no plain step timed yet


def test_the_margin_keeps_a_break_even_draft_out():
    costs = DecodeCosts()
    costs.add(1, 1.0)
    costs.add(2, 1.0 + 0.99)  # one drafted token costs a step: it pays only if it always holds, by less than MARGIN
    drafter = Drafter([1, 2, 3, 1, 2], costs, max_draft=1)
    drafter._accepted = 1000.0  # as good as certain
    assert MARGIN > 1 and drafter.propose(room=1) == []


# -- the setting: --draft, config.toml, /set ------------------------------------------------------


def test_draft_is_auto_by_default_and_set_by_flag_or_config(tmp_path, monkeypatch):
    from chatllm.errors import ChatllmError, UsageError
    from chatllm.repl.commands import parse_set
    from chatllm.settings import Sampling, load_settings

    monkeypatch.setenv("CHATLLM_HOME", str(tmp_path))
    assert load_settings().sampling.draft == "auto"
    assert load_settings(draft="OFF").sampling.draft == "off"
    (tmp_path / "config.toml").write_text('[sampling]\ndraft = "off"\n')
    assert load_settings().sampling.draft == "off"
    assert load_settings(draft="auto").sampling.draft == "auto"  # the flag wins
    with pytest.raises(UsageError, match="--draft must be auto or off"):
        load_settings(draft="sometimes")
    (tmp_path / "config.toml").write_text("[sampling]\ndraft = 1\n")
    with pytest.raises(ChatllmError, match='draft must be "auto" or "off"'):
        load_settings()
    (tmp_path / "config.toml").write_text('[sampling]\ndraft = "on"\n')
    with pytest.raises(UsageError, match="config.toml: .sampling. draft must be auto or off") as info:
        load_settings()
    assert info.value.hint == 'for example draft = "off"'  # as TOML writes it
    assert parse_set(Sampling(), "draft", "off").draft == "off"
    with pytest.raises(UsageError, match="draft must be auto or off"):
        parse_set(Sampling(), "draft", "maybe")
