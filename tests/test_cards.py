"""Model cards and config.json: present in every student and export dir, parseable, and their code runs."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny import import_blocker, make_tiny_teacher
from transformers import AutoModelForTokenClassification, AutoTokenizer
from xdistil_export.runtime import Predictor

from xdistil import DEFAULT_LABELS
from xdistil.cards import EXAMPLE, code_blocks, read_card, write_card
from xdistil.deployable import export_model
from xdistil.students import BiLSTMConfig, build_student, save_student
from xdistil.vocab import seen_piece_ids

LABELS = list(DEFAULT_LABELS)

BLOCK = import_blocker("torch", "transformers", "xdistil", why="a card's snippet must not need it")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cards")
    teacher = make_tiny_teacher(root)
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    model = AutoModelForTokenClassification.from_pretrained(teacher).eval()
    seen = seen_piece_ids(tokenizer, [EXAMPLE.split(), ["Berlin", "ist", "schön"]])
    torch.manual_seed(0)
    bilstm, btok = build_student("bilstm", model, tokenizer, seen, LABELS, BiLSTMConfig(embedding_dim=16, hidden_dim=16))
    student = save_student(bilstm.eval(), btok, root / "bilstm", extra={"labels": LABELS, "max_length": 32})
    write_card(student, scores={"de": 61.5, "ar": 40.25}, teacher="tiny-teacher-bert", command="xdistil distill ...")
    out = root / "bilstm-onnx"
    export_model(student, out, command="xdistil export bilstm --out bilstm-onnx")
    teacher_out = root / "teacher-onnx"
    export_model(teacher, teacher_out)
    torch.set_num_threads(before)
    return SimpleNamespace(root=root, student=student, out=out, teacher_out=teacher_out, params=bilstm)


def test_student_card_is_written_on_save_and_parses(env):
    front, body = read_card(env.student)
    assert front["pipeline_tag"] == "token-classification" and front["license"]
    assert front["labels"] == LABELS and "bilstm" in front["tags"]
    assert front["language"] == ["ar", "de"] and front["base_model"] == "tiny-teacher-bert"
    x = front["xdistil"]
    assert x["params"] == sum(p.numel() for p in env.params.parameters()) and x["size_bytes"] > 0
    assert x["dev_f1"] == {"de": 61.5, "ar": 40.25} and x["command"] == "xdistil distill ..."
    assert "| de | 61.50 |" in body and "| ar | 40.25 |" in body


def test_export_card_and_config(env):
    manifest = json.loads((env.out / "export_manifest.json").read_text())
    config = json.loads((env.out / "config.json").read_text())
    assert config["id2label"] == {str(i): lab for i, lab in enumerate(LABELS)}
    assert config["label2id"] == {lab: i for i, lab in enumerate(LABELS)}
    front, body = read_card(env.out)
    x = front["xdistil"]
    assert x["params"] == manifest["params"] and x["size_bytes"] == (env.out / "model.onnx").stat().st_size
    assert x["command"] == "xdistil export bilstm --out bilstm-onnx"
    # what only the student's card knew travels to the export's
    assert front["language"] == ["ar", "de"] and front["base_model"] == "tiny-teacher-bert"
    assert x["dev_f1"] == {"de": 61.5, "ar": 40.25} and "onnx" in front["tags"]
    assert "xdistil distill ..." in body  # the command that made the student
    tfront, tbody = read_card(env.teacher_out)
    assert tfront["xdistil"]["kind"] == "hf" and "Hugging Face token classifier" in tbody


def _run_snippet(code: str, cwd) -> str:
    proc = subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env=dict(os.environ, PYTHONPATH="", OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("which", ["out", "teacher_out"])
def test_the_cards_code_runs_as_written_without_torch(env, which):
    folder = getattr(env, which)
    _, body = read_card(folder)
    runtime, plain = code_blocks(body)
    predictor = Predictor(folder)

    printed = _run_snippet(runtime, folder).splitlines()
    expected = [f"{e['entity_group']} {e['word']} {e['start']} {e['end']} {round(e['score'], 3)}"
                for e in predictor.predict([EXAMPLE])[0]]
    assert printed == expected

    tags = ast.literal_eval(_run_snippet(plain, folder).strip())
    (logits,) = predictor.word_logits([EXAMPLE.split()])  # one window, plain argmax: as the snippet
    assert tags == [predictor.labels[k] for k in np.argmax(logits, -1)]


def test_the_student_cards_code_runs_on_its_export(env, tmp_path):
    (tmp_path / "onnx").symlink_to(env.out)  # as after `xdistil export . --out onnx`
    _, body = read_card(env.student)
    runtime, plain = code_blocks(body)
    predictor = Predictor(env.out)
    assert len(_run_snippet(runtime, tmp_path).splitlines()) == len(predictor.predict([EXAMPLE])[0])
    assert len(ast.literal_eval(_run_snippet(plain, tmp_path).strip())) == len(EXAMPLE.split())


def test_write_card_refuses_a_folder_that_is_neither(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a student"):
        write_card(tmp_path)
