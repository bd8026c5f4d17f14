"""``task: audio-classify`` with the wav2vec 2.0 encoder (``model.kind: wav2vec2``) end to end
through the CLI: a tiny classifier from scratch, one fine-tuned from a tiny ``speech-pretrain``
run (its frozen feature encoder is exactly the pretrained one), evaluate / predict on both, and
bad recipes as exit code 2 with one line before any audio is made."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import one_line_error, sets
from safetensors.torch import load_file

from seqformer.cli import main
from seqformer.data import speech
from seqformer.recipe import load_recipe, recipe_from_dict
from seqformer.recipe_audio import AudioRecipe

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng); CI installs it")

# Three words x 2 accents x 4 variants (2 train, 1 valid, 1 test), 0.6 s clips: 12 train /
# 6 valid / 6 test clips; an encoder of one tiny layer, a few steps.
DATA = ["data.words=['yes','no','stop']", "data.accents=[en,en-us]",
        "data.variants=[m1,m2,m3,f1]", "data.valid_variants=1", "data.test_variants=1",
        "data.renditions=1", "data.clip_seconds=0.6", "data.batch_size=6"]
SHAPE = ["model.d_model=16", "model.heads=2", "model.layers=1", "model.ffn_dim=32",
         "model.conv_dim=[8,8,8,8,8,8,8]", "model.pos_conv_kernel=4", "model.pos_conv_groups=2"]
TRAIN = ["train.epochs=2", "train.lr=1e-3", "train.progress=false", "train.device=cpu"]
# The tiny speech-pretrain run the fine-tuning test starts from (tests/cli/test_ssl_cli.py).
PRETRAIN = ["data.max_words=120", "data.accents=[en-us]", "data.voices_per_word=1",
            "data.batch_size=8", *SHAPE, "model.num_units=8", "units.iterations=3",
            "train.max_steps=2", "train.eval_every=2", "train.warmup_steps=1",
            "train.progress=false"]


pytestmark = pytest.mark.usefixtures("audio_cache")


def test_bundled_recipe_and_validation() -> None:
    recipe = load_recipe("w2v-speech-commands")
    assert isinstance(recipe, AudioRecipe) and recipe.kind == "wav2vec2"
    assert recipe.init_from == "runs/hubert-spoken-words" and recipe.data.renditions == 1
    # An explicit none (the bundled recipe's, or --set freeze=none) unfreezes a fine-tuned
    # encoder; unset ("auto") with init_from freezes its CNN.
    assert recipe.freeze_preset == "none" and recipe.to_dict()["freeze"] == "none"
    unfrozen = load_recipe("w2v-speech-commands", ["freeze=none"])
    assert unfrozen.freeze_preset == "none" and unfrozen.to_dict()["freeze"] == "none"
    auto = recipe_from_dict({"task": "audio-classify", "init_from": "runs/x",
                             "model": {"kind": "wav2vec2"}})
    assert auto.freeze_preset == "feature-encoder" and "freeze" not in auto.to_dict()
    # Fine-tuning: the run's shape, the recipe's masking and head size, the data's labels.
    base = {"d_model": 32, "heads": 2, "mask_time_prob": 0.65, "num_units": 8,
            "objective": "units"}
    config = recipe.model_config(10, base)
    assert (config.d_model, config.num_labels, config.mask_time_prob) == (32, 10, 0.05)
    # From scratch: freeze defaults to none, the fine-tuning mask rate to 0.05.
    scratch = recipe_from_dict({"task": "audio-classify", "model": {"kind": "wav2vec2",
                                                                    "d_model": 32}})
    assert scratch.freeze_preset == "none" and scratch.model_config(3).mask_time_prob == 0.05
    # AST recipes read and write as before: no kind, init_from or freeze in recipe.yaml.
    ast = load_recipe("ast-speech-commands")
    assert ast.kind == "ast" and not {"init_from", "freeze"} & set(ast.to_dict())
    assert "kind" not in ast.to_dict()["model"]
    with pytest.raises(Exception, match="model.num_mel_bins"):
        recipe_from_dict({"task": "audio-classify", "model": {"kind": "wav2vec2",
                                                              "num_mel_bins": 32}})


@needs_espeak
def test_from_scratch_train_evaluate_predict(tmp_path: Path, capsys) -> None:
    from seqformer.tasks.audio import AudioClassifier, WaveClassifier

    out = tmp_path / "run"
    assert main(["train", "w2v-speech-commands", "--out", str(out), *sets(DATA), *sets(SHAPE),
                 *sets(TRAIN), "--set", "init_from=null", "--set", "freeze=none",
                 "--set", "model.mask_time_prob=0.3", "--set", "model.mask_time_length=2"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("test: "))
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert set(metrics) == {"test_loss", "test_accuracy", "test_macro_f1"}
    assert f"accuracy {metrics['test_accuracy']:.4f}" in line
    config = json.loads((out / "config.json").read_text())
    assert config["family"] == "wav2vec2-classify" and config["labels"] == ["no", "stop", "yes"]
    assert config["features"] == {"sample_rate": 16000, "normalize": True}
    assert config["d_model"] == 16 and config["mask_time_prob"] == 0.3

    assert main(["evaluate", "--model", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(6 clips)" in printed and f"accuracy {metrics['test_accuracy']:.4f}" in printed
    assert "most confused:" in printed

    classifier = AudioClassifier.load(out)  # the family picks the class
    assert isinstance(classifier, WaveClassifier)
    test = classifier.test_split()
    assert test is not None and len(test) == 6
    rows = []
    for i, (wave_, label) in enumerate(zip(test.waveforms, test.labels)):
        speech.write_wav(tmp_path / f"{i}.wav", wave_)
        rows.append(f"{i}.wav\t{label}")
    (tmp_path / "clips.tsv").write_text("\n".join(rows) + "\n")
    assert main(["evaluate", "--model", str(out), "--data", str(tmp_path / "clips.tsv"),
                 "--out", str(tmp_path / "m.json")]) == 0
    assert "(6 clips)" in capsys.readouterr().out
    assert set(json.loads((tmp_path / "m.json").read_text())) == {"loss", "accuracy",
                                                                  "macro_f1"}
    from_arrays = classifier.predict(test.waveforms)
    hits = sum(p == g for p, g in zip(from_arrays, test.labels))
    assert hits / 6 == pytest.approx(metrics["test_accuracy"])
    # A WAV of another length, alone and padded in a batch with longer clips: same logits.
    short = 0.3 * np.sin(np.arange(7000) * 0.05)
    speech.write_wav(tmp_path / "short.wav", short)
    alone = classifier.logits([tmp_path / "short.wav"])
    batched = classifier.logits([tmp_path / "short.wav", *test.waveforms[:2]])
    torch.testing.assert_close(alone[0], batched[0], atol=1e-5, rtol=1e-5)
    assert classifier.predict([str(tmp_path / "short.wav")]) == [
        classifier.labels[int(alone[0].argmax())]]


@needs_espeak
def test_finetune_from_a_pretraining_run(tmp_path: Path, capsys) -> None:
    from seqformer.tasks.audio import AudioClassifier

    pre, out = tmp_path / "pre", tmp_path / "run"
    assert main(["train", "hubert-spoken-words", "--out", str(pre), *sets(PRETRAIN)]) == 0
    capsys.readouterr()
    assert main(["train", "w2v-speech-commands", "--out", str(out), *sets(DATA), *sets(TRAIN),
                 "--set", f"init_from={pre}", "--set", "freeze=feature-encoder"]) == 0
    printed = capsys.readouterr()
    assert "test: " in printed.out and f"encoder from {pre}" in printed.err + printed.out
    config = json.loads((out / "config.json").read_text())
    assert config["family"] == "wav2vec2-classify" and config["d_model"] == 16
    assert config["mask_time_prob"] == 0.05  # the recipe's, not the pretraining 0.65
    pretrained, tuned = load_file(pre / "model.safetensors"), load_file(out / "model.safetensors")
    conv = [k for k in tuned if k.startswith("wav2vec2.feature_extractor.")]
    assert conv and all(torch.equal(tuned[k], pretrained[k]) for k in conv)  # frozen
    encoder = [k for k in tuned if k.startswith("wav2vec2.encoder.")]
    assert any(not torch.equal(tuned[k], pretrained[k]) for k in encoder)  # fine-tuned
    assert main(["evaluate", "--model", str(out)]) == 0
    assert "(6 clips)" in capsys.readouterr().out
    wav = tmp_path / "tone.wav"
    speech.write_wav(wav, 0.4 * np.sin(2 * np.pi * 220 * np.arange(9600) / 16000))
    assert AudioClassifier.load(out).predict([wav])[0] in ("no", "stop", "yes")


@needs_espeak
def test_resume_is_exact(tmp_path: Path) -> None:
    """Shuffles and time masks are functions of (seed, batch position): a run stopped at step 2
    and resumed ends with the weights of one run straight to step 4."""
    common = [*DATA, *SHAPE, "init_from=null", "freeze=none", "model.mask_time_prob=0.3",
              "model.mask_time_length=2", "train.epochs=0", "train.schedule=constant",
              "train.warmup_steps=1", "train.eval_every=4", "train.save_every=2",
              "train.progress=false", "train.device=cpu"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    base = ["train", "w2v-speech-commands"]
    assert main([*base, "--out", str(straight), *sets([*common, "train.max_steps=4"])]) == 0
    assert main([*base, "--out", str(split), *sets([*common, "train.max_steps=2"])]) == 0
    assert main([*base, "--out", str(split), *sets([*common, "train.max_steps=4"]),
                 "--resume"]) == 0
    a, b = (load_file(d / "last" / "model.safetensors") for d in (straight, split))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


W2V, AST = "w2v-speech-commands", "ast-speech-commands"


@pytest.mark.parametrize("recipe,override,message", [
    (AST, ["init_from=runs/x"], "init_from=runs/x: a pretrained encoder needs model.kind: "
                                "wav2vec2"),
    (AST, ["freeze=feature-encoder"], "use it with model.kind: wav2vec2"),
    (AST, ["model.kind=conv"], "model.kind='conv'; use one of ast, wav2vec2"),
    (W2V, ["freeze=all"], "freeze='all'"),
    (W2V, ["model.d_model=64"], "model.d_model: the encoder's shape comes from init_from"),
    (W2V, ["model.num_mel_bins=64"], "unknown field 'model.num_mel_bins'"),
    (W2V, ["init_from=/nonexistent/run"], "init_from: /nonexistent/run: no such model "
                                          "directory"),
])
def test_bad_recipes_exit_2_before_any_audio(recipe: str, override: list[str], message: str,
                                             tmp_path: Path, capsys, monkeypatch) -> None:
    # An empty cache and no espeak-ng: each of these must fail before synthesis is tried.
    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv(speech.ESPEAK_ENV, str(tmp_path / "no-espeak-here"))
    code = main(["train", recipe, "--out", str(tmp_path / "r"), *sets(DATA), *sets(override)])
    assert message in one_line_error(capsys, code)


def test_init_from_another_family_exits_2(tmp_path: Path, capsys) -> None:
    from seqformer.models.audio import AST, ASTConfig

    AST(ASTConfig(num_mel_bins=16, max_frames=20, d_model=8, heads=2, layers=1, ffn_dim=16,
                  num_labels=2), ["no", "yes"]).save(tmp_path / "ast", {"mean": -5.0})
    code = main(["train", "w2v-speech-commands", "--out", str(tmp_path / "r"), *sets(DATA),
                 "--set", f"init_from={tmp_path / 'ast'}"])
    assert "not a wav2vec2" in one_line_error(capsys, code)


@pytest.mark.parametrize("do_normalize", [True, False])
def test_imported_hf_classifier_evaluates_and_predicts(tmp_path: Path, capsys,
                                                       do_normalize: bool) -> None:
    """A Hugging Face Wav2Vec2ForSequenceClassification, imported: ``evaluate --data`` takes it,
    and its logits on a WAV are HF's on what its feature extractor makes of the samples."""
    transformers = pytest.importorskip("transformers")
    from seqformer.tasks.audio import AudioClassifier

    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8, 8), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
        num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
        classifier_proj_size=8, id2label={0: "no", 1: "yes"})
    theirs = transformers.Wav2Vec2ForSequenceClassification(config).eval()
    theirs.save_pretrained(tmp_path / "hf")
    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=do_normalize)
    extractor.save_pretrained(tmp_path / "hf")
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "ours")]) == 0
    capsys.readouterr()

    rng = np.random.default_rng(0)
    clips = [0.3 * rng.standard_normal(n).astype(np.float32) for n in (1600, 1200)]
    for i, clip in enumerate(clips):
        speech.write_wav(tmp_path / f"{i}.wav", clip)
    (tmp_path / "clips.tsv").write_text("0.wav\tyes\n1.wav\tno\n")
    assert main(["evaluate", "--model", str(tmp_path / "ours"),
                 "--data", str(tmp_path / "clips.tsv")]) == 0
    assert "(2 clips)" in capsys.readouterr().out

    classifier = AudioClassifier.load(tmp_path / "ours")
    assert classifier.labels == ["no", "yes"] and classifier.normalize == do_normalize
    samples = speech.read_wav(tmp_path / "1.wav")
    inputs = extractor(samples, sampling_rate=16000, return_tensors="pt").input_values
    with torch.no_grad():
        expected = theirs(inputs).logits[0]
    torch.testing.assert_close(classifier.logits([tmp_path / "1.wav"])[0], expected,
                               atol=1e-4, rtol=1e-4)
