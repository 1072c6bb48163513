"""Report tokenizer: exact round trips on real reports, stable special ids, external files."""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from test_data_loaders import write_mimic_fixture
from unixcxr.cli import main
from unixcxr.data.iu import iter_iu_reports
from unixcxr.model.config import TokenConfig
from unixcxr.model.tokenizer import (
    RELEASED_SPECIAL_TOKENS,
    ReportTokenizer,
    SpecialTokens,
    TokenizerError,
)

OWN_IDS = SpecialTokens(bos=0, eos=1, pad=2, start_of_image=3, end_of_image=4)


@pytest.fixture(scope="module")
def iu_texts():
    return [r.text for r in iter_iu_reports()]


@pytest.fixture(scope="module")
def trained(iu_texts):
    return ReportTokenizer.train(iu_texts[::2], vocab_size=1024)  # half, so the rest is unseen text


def test_real_reports_round_trip_exactly_including_unseen_ones(trained, iu_texts):
    unseen = iu_texts[1::2]
    ids = trained.encode_batch(unseen)
    assert trained.decode_batch(ids) == unseen
    assert ids[0] == trained.encode(unseen[0])
    odd = "Ø 5 mm nodule — «unclear» 肺 \t tabs\nnew line  "
    assert trained.decode(trained.encode(odd)) == odd  # byte-level: nothing is unknown


def test_learned_merges_compress_reports(trained, iu_texts):
    text = iu_texts[1]
    assert len(trained.encode(text)) < len(text.encode("utf-8")) / 3
    assert trained.vocab_size == 1024


def test_special_ids_are_fixed_never_encoded_and_skipped_when_decoding(trained, iu_texts):
    assert trained.special == OWN_IDS
    assert ReportTokenizer.train(iu_texts[:50], vocab_size=300).special == OWN_IDS  # whatever the corpus
    assert trained.special.as_dict() == {k: getattr(OWN_IDS, k) for k in TokenConfig.__dataclass_fields__}
    ids = trained.encode("<|bos|> lungs")  # special names in text stay text
    assert not set(ids) & trained.special.ids and trained.decode(ids) == "<|bos|> lungs"
    body = trained.encode("No effusion.")
    assert trained.decode([0, *body, 1, 2, 2]) == "No effusion."


def test_save_is_atomic_and_loads_back_identically(trained, iu_texts, tmp_path):
    (tmp_path / "model").mkdir()
    path = trained.save(tmp_path / "model")  # a folder gets tokenizer.json
    assert path.name == "tokenizer.json" and not list(path.parent.glob("*.tmp"))
    loaded = ReportTokenizer.load(tmp_path / "model")
    assert loaded.special == trained.special and loaded.encode_batch(iu_texts[:20]) == trained.encode_batch(
        iu_texts[:20])


def external_tokenizer(path, texts):
    """A DeepSeek-style file: its own special-token names, no pad, and ids we must be told."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=290, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"],
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.save(str(path))
    return path


def test_external_tokenizer_loads_with_explicit_special_ids(tmp_path, iu_texts):
    path = external_tokenizer(tmp_path / "tokenizer.json", iu_texts[:100])
    with pytest.raises(TokenizerError, match="pass its ids explicitly"):
        ReportTokenizer.load(path)
    bos, eos = (Tokenizer.from_file(str(path)).token_to_id(t) for t in ("<｜begin▁of▁sentence｜>",
                                                                          "<｜end▁of▁sentence｜>"))
    special = SpecialTokens(bos=bos, eos=eos, pad=300, start_of_image=301, end_of_image=302)
    tokenizer = ReportTokenizer.load(path, special=special)
    assert tokenizer.vocab_size == 303  # widened to hold ids the file does not name
    text = "Heart size is normal."
    assert tokenizer.decode([bos, *tokenizer.encode(text), eos, 300]) == text


def test_released_ids_match_the_model_config_and_differ_from_each_other():
    assert RELEASED_SPECIAL_TOKENS == SpecialTokens(bos=100000, eos=100001, pad=100002, start_of_image=100003,
                                                    end_of_image=100580)
    assert RELEASED_SPECIAL_TOKENS.as_dict() == TokenConfig().__dict__
    with pytest.raises(TokenizerError, match="distinct"):
        ReportTokenizer(Tokenizer(models.BPE()), SpecialTokens(1, 1, 2, 3, 4))


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(TokenizerError, match="empty"):
        ReportTokenizer.train([])
    with pytest.raises(TokenizerError, match="below the byte alphabet"):
        ReportTokenizer.train(["lungs"], vocab_size=100)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="unixcxr tokenizer train"):
        ReportTokenizer.load(tmp_path / "tokenizer.json")


def test_cli_trains_on_the_training_reports_of_a_data_folder(tmp_path, capsys):
    data = write_mimic_fixture(tmp_path / "mimic")
    out = tmp_path / "tok" / "tokenizer.json"
    assert main(["tokenizer", "train", str(data), "-o", str(out), "--vocab-size", "300"]) == 0
    assert "trained on 2 reports" in capsys.readouterr().out
    tokenizer = ReportTokenizer.load(out)
    assert tokenizer.special == OWN_IDS and tokenizer.vocab_size <= 300
    assert main(["tokenizer", "encode", str(out), "FINDINGS: Lungs are clear."]) == 0
    assert "decodes back exactly" in capsys.readouterr().out
    assert main(["tokenizer", "train", str(tmp_path / "absent"), "-o", str(out)]) == 2
