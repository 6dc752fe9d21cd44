import pytest
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from xdistil.evaluate import score

GOLD = [
    ["B-PER", "I-PER", "O", "B-LOC", "O"],
    ["B-ORG", "I-ORG", "I-ORG", "O"],
    ["O", "B-PER", "O", "B-LOC", "I-LOC"],
]
PRED = [
    ["B-PER", "I-PER", "O", "B-ORG", "O"],  # PER right, LOC typed wrong
    ["B-ORG", "I-ORG", "O", "O"],  # ORG boundary wrong
    ["O", "B-PER", "O", "B-LOC", "I-LOC"],  # both right
]


def test_matches_seqeval_strict():
    m = score(GOLD, PRED)
    kw = {"mode": "strict", "scheme": IOB2}
    assert m["f1"] == pytest.approx(100 * f1_score(GOLD, PRED, **kw))
    assert m["precision"] == pytest.approx(100 * precision_score(GOLD, PRED, **kw))
    assert m["recall"] == pytest.approx(100 * recall_score(GOLD, PRED, **kw))
    # by hand: 5 gold entities, 5 predicted, 3 correct
    assert m["precision"] == pytest.approx(60.0) and m["recall"] == pytest.approx(60.0)
    assert m["per_type"]["PER"]["f1"] == pytest.approx(100.0)
    assert m["per_type"]["ORG"]["precision"] == 0.0 and m["per_type"]["ORG"]["support"] == 1
    assert m["per_type"]["LOC"]["recall"] == pytest.approx(50.0)
    assert m["support"] == 5 and m["sentences"] == 3


def test_strict_mode_does_not_credit_broken_spans():
    # an I- without B- is not an entity in strict IOB2
    m = score([["B-PER", "I-PER"]], [["I-PER", "I-PER"]])
    assert m["f1"] == 0.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="sentence 1: 4 gold tags but 3 predictions"):
        score(GOLD[:2], [PRED[0], PRED[1][:3]])


def test_selection_average_leaves_out_slices_without_gold_entities():
    from xdistil.evaluate import selection_average

    with_entities = score([["B-PER", "O"]], [["B-PER", "O"]])  # 100
    without = score([["O", "O"]], [["B-LOC", "O"]])  # 0 F1 whatever is predicted
    assert without["support"] == 0
    assert selection_average({"de": with_entities, "sv": without}) == 100.0
    assert selection_average({"sv": without}) == 0.0


def test_a_slice_without_any_entity_scores_zero_without_numpy_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # seqeval's macro average over no entity type warned before
        m = score([["O", "O"], ["O"]], [["O", "O"], ["O"]])
    assert (m["f1"], m["support"], m["per_type"], m["sentences"]) == (0.0, 0, {}, 2)
