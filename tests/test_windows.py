import random

from xdistil_export.windows import encode_windows, plan_windows


def check_partition(counts, max_pieces, overlap=None):
    wins = plan_windows(counts, max_pieces, overlap)
    kept = [w for win in wins for w in range(win.keep_start, win.keep_end)]
    assert kept == list(range(len(counts))), "every word is kept exactly once, in order"
    for win in wins:
        assert win.start <= win.keep_start <= win.keep_end <= win.end
        assert sum(min(c, max_pieces) for c in counts[win.start : win.end]) <= max_pieces
    return wins


def test_short_sentence_is_one_window():
    wins = check_partition([1, 2, 1], 10)
    assert len(wins) == 1 and wins[0].start == 0 and wins[0].end == 3


def test_random_partitions():
    rng = random.Random(0)
    for _ in range(300):
        counts = [rng.randint(1, 6) for _ in range(rng.randint(0, 120))]
        check_partition(counts, rng.randint(6, 40), rng.choice([None, 0, 3, 10]))


def test_word_longer_than_window_is_kept():
    wins = check_partition([1, 50, 1], 8)
    assert any(win.keep_start <= 1 < win.keep_end for win in wins)
    enc = encode_windows([[5], list(range(100, 150)), [6]], 8, cls_id=0, sep_id=2)
    assert all(len(e.input_ids) <= 10 for e in enc)


def test_thousand_word_sentence_every_word_predicted_with_context():
    counts = [1 + (i % 3) for i in range(1000)]
    wins = check_partition(counts, 126)
    assert len(wins) > 10
    # a kept word is never at the very edge of a window unless at the sentence edge
    for win in wins[1:-1]:
        assert win.keep_start > win.start and win.keep_end < win.end
    pieces = [[10 + i] * c for i, c in enumerate(counts)]
    enc = encode_windows(pieces, 126, cls_id=0, sep_id=2)
    for e in enc:
        assert e.input_ids[0] == 0 and e.input_ids[-1] == 2 and len(e.input_ids) <= 128
        for k, w in enumerate(range(e.window.start, e.window.end)):
            assert e.input_ids[e.word_starts[k]] == 10 + w  # the first sub-word of word w
