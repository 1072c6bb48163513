"""CheXbert backend: the released checkpoint layout, 512-token reading, padding, errors (tiny random BERT)."""

from __future__ import annotations

import csv

import pytest
import torch

pytest.importorskip("transformers")
from transformers import BertConfig  # noqa: E402

from unixcxr.cli import main  # noqa: E402
from unixcxr.evaluate.chexbert import CheXbert, CheXbertError, CheXbertLabeler  # noqa: E402
from unixcxr.labels import OBSERVATIONS  # noqa: E402

WORDS = ["no", "small", "left", "right", "pneumothorax", "effusion", "heart", "size", "is", "normal", ".", ","]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Head biases that force one class per head: 0 blank, 1 positive, 2 negative, 3 uncertain.
FORCED = {"Pneumothorax": 2, "Pleural Effusion": 1, "Edema": 3, "No Finding": 1}


def tiny_config() -> BertConfig:
    return BertConfig(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)


def save_released_layout(folder, forced: dict[str, int] | None) -> tuple:
    """A bert folder (config.json, vocab.txt) and chexbert.pth in the published checkpoint layout."""
    torch.manual_seed(0)
    bert = folder / "bert"
    bert.mkdir()
    config = tiny_config()
    config.save_pretrained(bert)
    (bert / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    model = CheXbert(config)
    if forced is not None:
        for name, head in zip(OBSERVATIONS, model.linear_heads):
            torch.nn.init.zeros_(head.weight)
            with torch.no_grad():
                head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(forced.get(name, 0)),
                                                            head.out_features).float() * 10)
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    state["module.bert.embeddings.position_ids"] = torch.arange(512)[None]  # saved by old transformers
    checkpoint = folder / "chexbert.pth"
    torch.save({"epoch": 7, "model_state_dict": state}, checkpoint)
    return checkpoint, bert


def test_released_checkpoint_loads_and_head_classes_map_to_labels(tmp_path):
    checkpoint, bert = save_released_layout(tmp_path, FORCED)
    labels = CheXbertLabeler(checkpoint, bert).label_reports(["No pneumothorax.", "Small left effusion."])
    expected = {**dict.fromkeys(OBSERVATIONS), "Pneumothorax": 0, "Pleural Effusion": 1, "Edema": -1,
                "No Finding": 1}
    assert labels == [expected, expected]


def test_reports_are_read_up_to_512_tokens_not_512_characters(tmp_path):
    labeler = CheXbertLabeler(*save_released_layout(tmp_path, FORCED))
    medium = "small left effusion . " * 40  # 880 characters, 160 word pieces: must not be cut
    long = "small left effusion . " * 200  # 800 word pieces: cut to 512 tokens
    medium_ids, long_ids = labeler.encode([medium, long])
    assert len(medium) > 512 and len(medium_ids) == 160 + 2
    assert len(long_ids) == 512 and long_ids[0] == labeler.tokenizer.cls_token_id
    assert long_ids[-1] == labeler.tokenizer.sep_token_id


def test_padding_in_a_batch_does_not_change_the_logits(tmp_path):
    labeler = CheXbertLabeler(*save_released_layout(tmp_path, forced=None))
    texts = ["no pneumothorax .", "heart size is normal , no left or right effusion ."]
    ids = labeler.encode(texts)
    width = max(map(len, ids))
    batch = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for row, seq in enumerate(ids):
        batch[row, : len(seq)], mask[row, : len(seq)] = torch.tensor(seq), 1
    with torch.no_grad():
        padded = labeler.model(batch, mask)
        alone = labeler.model(torch.tensor([ids[0]]), torch.ones(1, len(ids[0]), dtype=torch.long))
    for head_padded, head_alone in zip(padded, alone):
        assert torch.allclose(head_padded[0], head_alone[0], atol=1e-5)
    assert labeler.label_reports(texts, batch_size=1) == labeler.label_reports(texts, batch_size=2)


def test_missing_or_mismatched_files_name_what_is_wrong(tmp_path):
    checkpoint, bert = save_released_layout(tmp_path, FORCED)
    with pytest.raises(CheXbertError, match="checkpoint not found"):
        CheXbertLabeler(tmp_path / "nope.pth", bert)
    with pytest.raises(CheXbertError, match="BERT folder not found"):
        CheXbertLabeler(checkpoint, tmp_path / "nope")
    (bert / "vocab.txt").unlink()
    with pytest.raises(CheXbertError, match="vocab.txt"):
        CheXbertLabeler(checkpoint, bert)
    wrong = tmp_path / "wrong.pth"
    torch.save({"model_state_dict": {"module.classifier.weight": torch.zeros(2, 2)}}, wrong)
    (bert / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    with pytest.raises(CheXbertError, match="do not match"):
        CheXbertLabeler(wrong, bert)


def test_label_cli_with_the_chexbert_backend(tmp_path):
    checkpoint, bert = save_released_layout(tmp_path, FORCED)
    src = tmp_path / "reports.csv"
    src.write_text("id,report\n1,No pneumothorax.\n2,Small right effusion.\n")
    out = tmp_path / "labels.csv"
    code = main(["label", str(src), "-o", str(out), "--backend", "chexbert", "--chexbert", str(checkpoint),
                 "--bert", str(bert), "--batch-size", "1"])
    assert code == 0
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["Pneumothorax"] for r in rows] == ["0", "0"] and rows[1]["Edema"] == "-1"
