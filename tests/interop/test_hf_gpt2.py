"""GPT-2 import/export: logits and greedy generation equal transformers', round trip, tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqformer.data.tokenizer import load_tokenizer
from seqformer.decoding.sampling import generate
from seqformer.errors import CheckpointError, ConfigError
from seqformer.interop import hf_gpt2
from seqformer.models.gpt import GPT, GPTConfig

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Hello world, hello GPT-2!",
         "Byte-level BPE never needs an unknown token: caf\u00e9 na\u00efve \U0001f600"] * 5


def train_byte_level_bpe(vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(TEXTS, trainer)
    return tok


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    """A tiny random GPT-2 with its own byte-level BPE, saved by save_pretrained."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    path = tmp_path_factory.mktemp("gpt2")
    raw = train_byte_level_bpe()
    eot = raw.token_to_id("<|endoftext|>")
    tokenizer = GPT2TokenizerFast(tokenizer_object=raw, bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tokenizer.save_pretrained(path)
    config = GPT2Config(vocab_size=raw.get_vocab_size(), n_positions=40, n_embd=32, n_layer=2,
                        n_head=4, bos_token_id=eot, eos_token_id=eot, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():  # larger than GPT-2's init, so the numbers (and argmaxes) mean something
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.save_pretrained(path)
    return path


def hf_model(path: Path):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(path).eval()


def padded_batch(vocab: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    lengths = [12, 7, 3]
    ids = torch.full((3, 12), pad, dtype=torch.long)
    mask = torch.zeros(3, 12, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(0, vocab, (n,), generator=g)
        mask[i, :n] = 1
    return ids, mask


def test_config_maps_gpt2_options(gpt2_dir: Path) -> None:
    model = GPT.from_hf(gpt2_dir)
    c = model.config
    assert (c.activation, c.positional, c.norm_first, c.tie_output) == (
        "gelu_tanh", "learned", True, True)
    assert c.eos_id == c.bos_id == c.pad_id == hf_model(gpt2_dir).config.eos_token_id
    assert model.head.weight is model.embed.weight


def test_logits_equal_transformers_with_right_padding(gpt2_dir: Path) -> None:
    ours, ref = GPT.from_hf(gpt2_dir), hf_model(gpt2_dir)
    ids, mask = padded_batch(ours.config.vocab_size, ours.config.eos_id)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).logits
    got = ours.logits(ids)
    real = mask.bool()
    diff = (got[real] - expected[real]).abs().max().item()
    assert diff <= 1e-4, diff
    assert expected[real].abs().max() > 1.0  # not a trivially tiny comparison
    # Each row alone (no padding at all) gives the same logits as inside the padded batch.
    for i, n in enumerate(mask.sum(1).tolist()):
        alone = ours.logits(ids[i:i + 1, :n])
        torch.testing.assert_close(alone[0], got[i, :n], atol=1e-5, rtol=1e-5)


def test_greedy_generation_equals_transformers_generate(gpt2_dir: Path) -> None:
    ours, ref = GPT.from_hf(gpt2_dir), hf_model(gpt2_dir)
    eos = ours.config.eos_id
    prompts = torch.randint(1, ours.config.vocab_size, (3, 5),
                            generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = ref.generate(prompts, attention_mask=torch.ones_like(prompts),
                                do_sample=False, max_new_tokens=20, pad_token_id=eos)[:, 5:]
    got = torch.stack(list(generate(ours, prompts, 20, temperature=0.0, eos_id=eos,
                                    suppress=())), dim=1)
    n = expected.shape[1]  # transformers stops once every row has emitted eos
    assert got[:, :n].tolist() == expected.tolist()
    assert len(set(got.flatten().tolist())) >= 3  # not one repeated token


def test_round_trip_reloads_in_transformers_with_the_same_logits(gpt2_dir: Path,
                                                                 tmp_path: Path) -> None:
    ours = GPT.from_hf(gpt2_dir)
    ours.to_hf(tmp_path / "out", tokenizer=hf_gpt2.load_tokenizer(gpt2_dir, ours.config))
    ids, mask = padded_batch(ours.config.vocab_size, ours.config.eos_id)
    with torch.no_grad():
        before = hf_model(gpt2_dir)(input_ids=ids, attention_mask=mask).logits
        after = hf_model(tmp_path / "out")(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert reloaded(TEXTS[2]).input_ids == AutoTokenizer.from_pretrained(gpt2_dir)(
        TEXTS[2]).input_ids


def test_untied_head_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=40, d_model=16, heads=2, layers=1, ffn_dim=24,
                          max_len=16, tie_output=False, activation="gelu_tanh", dropout=0.0))
    model.to_hf(tmp_path)
    back = GPT.from_hf(tmp_path)
    x = torch.randint(0, 40, (2, 9))
    torch.testing.assert_close(back.logits(x), model.eval().logits(x), atol=0, rtol=0)
    with torch.no_grad():
        ref = hf_model(tmp_path)(input_ids=x).logits
    torch.testing.assert_close(ref, model.logits(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("files", ["tokenizer.json", "vocab+merges"])
def test_tokenizer_matches_gpt2_tokenizer_fast(gpt2_dir: Path, tmp_path: Path,
                                               files: str) -> None:
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(gpt2_dir)
    source = gpt2_dir
    if files == "vocab+merges":  # the classic GPT-2 files, without tokenizer.json
        source = tmp_path / "classic"
        source.mkdir()
        ref.backend_tokenizer.model.save(str(source))
    tok = hf_gpt2.load_tokenizer(source, GPT.from_hf(gpt2_dir).config)
    for text in TEXTS[:3] + ["unseen w\u00f6rds <|endoftext|> too"]:
        assert tok.encode(text) == ref(text).input_ids
        assert tok.decode(tok.encode(text)) == text.replace("<|endoftext|>", "")
    tok.save(tmp_path / "saved")
    again = load_tokenizer(tmp_path / "saved")
    assert again.fingerprint == tok.fingerprint
    assert again.encode(TEXTS[0]) == tok.encode(TEXTS[0])
    assert (again.eos_id, again.vocab_size) == (tok.eos_id, ref.backend_tokenizer.get_vocab_size())


def test_pickle_needs_trust(gpt2_dir: Path, tmp_path: Path) -> None:
    import shutil

    # transformers 5 writes only safetensors; a pickled state dict is what older versions wrote.
    torch.save(hf_model(gpt2_dir).state_dict(), tmp_path / "pytorch_model.bin")
    shutil.copyfile(gpt2_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="--trust-pickle"):
        GPT.from_hf(tmp_path)
    model = GPT.from_hf(tmp_path, trust_pickle=True)
    x = torch.randint(0, 50, (1, 6))
    torch.testing.assert_close(model.logits(x), GPT.from_hf(gpt2_dir).logits(x))


def test_unsupported_options_are_named() -> None:
    with pytest.raises(CheckpointError, match="scale_attn_by_inverse_layer_idx"):
        hf_gpt2.config_from_hf({"model_type": "gpt2", "scale_attn_by_inverse_layer_idx": True})
    with pytest.raises(ConfigError, match="rotary"):
        hf_gpt2.config_to_hf(GPTConfig(vocab_size=40, positional="rotary"))


def test_cli_import_generate_export(gpt2_dir: Path, tmp_path: Path, capsys) -> None:
    from transformers import AutoTokenizer

    from seqformer.cli import main

    out = tmp_path / "gpt2-tiny"
    assert main(["import", str(gpt2_dir), "--out", str(out)]) == 0
    capsys.readouterr()
    prompt = "Hello world"
    assert main(["generate", "--model", str(out), "--prompt", prompt, "--temperature", "0",
                 "--max-new", "12"]) == 0
    ours = capsys.readouterr().out.rstrip("\n")

    tok, ref = AutoTokenizer.from_pretrained(gpt2_dir), hf_model(gpt2_dir)
    eot = tok.eos_token_id
    ids = torch.tensor([[eot, *tok(prompt).input_ids]])  # the prompt starts a document
    with torch.no_grad():
        new = ref.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                           max_new_tokens=12, pad_token_id=eot)[0, ids.shape[1]:].tolist()
    new = new[:new.index(eot)] if eot in new else new
    assert ours == prompt + tok.decode(new)
    assert len(ours) > len(prompt)

    exported = tmp_path / "exported"
    assert main(["export", str(out), "--out", str(exported)]) == 0
    x = torch.randint(0, tok.backend_tokenizer.get_vocab_size(), (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(hf_model(exported)(input_ids=x).logits,
                                   ref(input_ids=x).logits, atol=1e-5, rtol=1e-5)


def test_sharded_safetensors_load(gpt2_dir: Path, tmp_path: Path) -> None:
    hf_model(gpt2_dir).save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    x = torch.randint(0, 50, (1, 7))
    torch.testing.assert_close(GPT.from_hf(tmp_path).logits(x), GPT.from_hf(gpt2_dir).logits(x),
                               atol=0, rtol=0)


def test_perplexity_of_an_imported_gpt2_equals_transformers(gpt2_dir: Path,
                                                            tmp_path: Path) -> None:
    """Scored from GPT-2's own start token, with every end-of-text target counted: the mean
    NLL equals transformers' loss on the same ids."""
    from seqformer.interop.hf import import_hf
    from seqformer.tasks.lm import LanguageModel

    import_hf(gpt2_dir, tmp_path / "m")
    lm = LanguageModel.load(tmp_path / "m")
    text = "Hello world, hello GPT-2!<|endoftext|>The quick brown fox."
    ours = lm.perplexity(text)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gpt2_dir)
    ids = torch.tensor([[lm.model.bos_id, *tok(text).input_ids]])
    assert ids.shape[1] <= lm.model.config.max_len and int(ours["tokens"]) == ids.shape[1] - 1
    with torch.no_grad():
        loss = hf_model(gpt2_dir)(input_ids=ids, labels=ids).loss
    assert abs(ours["nll"] - float(loss)) < 1e-5
    assert lm.model.eos_id in ids[0, 1:].tolist()  # an end-of-text target was scored


def test_beam_search_equals_transformers_generate(gpt2_dir: Path) -> None:
    """Beam 4, length_penalty 1.0, canonical stopping (transformers' early_stopping="never").
    Both sides end every hypothesis at the last step with eos scored by its real log-prob
    (transformers via a small processor; by default it keeps cut hypotheses without eos)."""
    from transformers import LogitsProcessor, LogitsProcessorList

    from seqformer.decoding.continuation import Continuation
    from seqformer.decoding.search import beam_search, greedy_search

    ours, ref = GPT.from_hf(gpt2_dir), hf_model(gpt2_dir)
    eos, new = ours.config.eos_id, 12
    prompts = torch.randint(1, ours.config.vocab_size, (3, 5),
                            generator=torch.Generator().manual_seed(4))

    class EosAtLastStep(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            if input_ids.shape[-1] != prompts.shape[1] + new - 1:
                return scores
            forced = torch.full_like(scores, float("-inf"))
            forced[:, eos] = scores.log_softmax(-1)[:, eos]
            return forced

    with torch.no_grad():
        out = ref.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                           num_beams=4, max_new_tokens=new, length_penalty=1.0,
                           early_stopping="never", pad_token_id=eos,
                           logits_processor=LogitsProcessorList([EosAtLastStep()]))[:, 5:]
    expected = [row[: row.index(eos) + 1] if eos in row else row for row in out.tolist()]
    lm = Continuation(ours)
    got = [n[0].tokens + [eos] for n in beam_search(lm, prompts, beam=4, max_length=new,
                                                    alpha=1.0, penalty="plain")]
    assert got == expected
    greedy = [h.tokens + [eos] for h in greedy_search(lm, prompts, max_length=new)]
    assert greedy != got  # the beam found what greedy did not: the test has teeth


def test_gpt2_fine_tunes_from_init_from_and_exports(gpt2_dir: Path, tmp_path: Path) -> None:
    """`train` a task: lm recipe with init_from: hf:PATH; validation loss falls from the
    imported model's; the result exports to transformers with equal logits."""
    import json

    from seqformer.cli import main

    (tmp_path / "train.txt").write_text("\n".join(TEXTS * 8) + "\n", encoding="utf-8")
    recipe = tmp_path / "lm.yaml"
    recipe.write_text(f"""
name: tuned-gpt2
task: lm
init_from: hf:{gpt2_dir}
data: {{corpus: files, train: [{tmp_path / 'train.txt'}], valid_percent: 20, batch_size: 4}}
model: {{dropout: 0.0}}
train: {{max_steps: 30, lr: 0.003, warmup_steps: 5, eval_every: 15, save_every: 15,
         progress: false, device: cpu, seed: 3}}
generate: {{prompt: "Hello", max_new: 5}}
""")
    assert main(["train", str(recipe), "--out", str(tmp_path / "run")]) == 0
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["valid"]["valid_loss"] for r in log if "valid" in r]
    from seqformer.tasks.lm import LanguageModel, score_ids

    base = LanguageModel.load(tmp_path / "run")
    assert base.model.config.eos_id == hf_model(gpt2_dir).config.eos_token_id
    imported = GPT.from_hf(gpt2_dir)
    valid = (tmp_path / "train.txt").read_text()  # any text: the imported model scores worse
    from seqformer.data.lm import encode_text

    ids = encode_text(base.tokenizer, valid, imported.bos_id)
    before = score_ids(imported, ids, 40)
    after = score_ids(base.model, ids, 40)
    assert after[0] / after[1] < 0.85 * before[0] / before[1] and losses[-1] <= losses[0]
    assert main(["export", str(tmp_path / "run"), "--format", "hf", "--out",
                 str(tmp_path / "back")]) == 0
    back = hf_model(tmp_path / "back")
    x = torch.tensor([ids[:20]])
    with torch.no_grad():
        assert torch.allclose(back(input_ids=x).logits, base.model.logits(x), atol=1e-4)
