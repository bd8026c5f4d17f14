"""An audio classifier's ``evaluate`` without ``--data`` re-makes the recipe's test split: it
must refuse (exit 2, one line) when the data now gives another split than the run was trained
on, for the AST and the wav2vec2 classifier alike."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from cli_helpers import sets

from seqformer.cli import main

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng); CI installs it")

# Three words x 2 accents x 4 variants (2 train, 1 valid, 1 test), 0.6 s clips: 12 / 6 / 6.
DATA = ["data.words=['yes','no','stop']", "data.accents=[en,en-us]",
        "data.variants=[m1,m2,m3,f1]", "data.valid_variants=1", "data.test_variants=1",
        "data.renditions=1", "data.clip_seconds=0.6", "data.batch_size=6"]
TRAIN = ["train.epochs=1", "train.lr=1e-3", "train.progress=false", "train.device=cpu"]
AST = ["model.num_mel_bins=32", "model.max_frames=58", "model.d_model=16", "model.heads=2",
       "model.layers=1", "model.ffn_dim=32"]
WAVE = ["init_from=null", "freeze=none", "model.d_model=16", "model.heads=2", "model.layers=1",
        "model.ffn_dim=32", "model.conv_dim=[8,8,8,8,8,8,8]", "model.pos_conv_kernel=4",
        "model.pos_conv_groups=2"]


pytestmark = pytest.mark.usefixtures("audio_cache")


@needs_espeak
@pytest.mark.parametrize("recipe,shape", [("ast-speech-commands", AST),
                                          ("w2v-speech-commands", WAVE)],
                         ids=["ast", "wav2vec2"])
def test_evaluate_refuses_a_test_split_the_run_was_not_trained_on(
        recipe: str, shape: list[str], tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", recipe, "--out", str(out), *sets(DATA), *sets(shape),
                 *sets(TRAIN)]) == 0
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    trained = saved["fingerprints"]["split"]
    assert trained
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out)]) == 0  # the same data: the same split
    assert "(6 clips)" in capsys.readouterr().out

    # As if the data had changed since training: the recorded split is another one.
    saved["fingerprints"]["split"] = "0123456789abcdef"
    (out / "recipe.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert main(["evaluate", "--model", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("seqformer: error: "), err
    assert f"now gives split {trained}" in err and "trained on split 0123456789abcdef" in err
    assert "recipe.yaml" in err and "give --data FILE.tsv instead" in err
