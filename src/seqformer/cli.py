"""``seqformer train | transduce | generate | evaluate | attention | plot | average | recipes``
(and, registered from their own modules, the other families' commands, ``classify`` among
them).

Every error a user can cause is a :class:`~seqformer.errors.UserError`; it is printed on one
line as ``seqformer: error: ...`` and the process exits with code 2. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from seqformer.errors import DataError, UserError

EXAMPLES = 5


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a plain process (kept import-free: the CLI starts fast)."""
    return os.environ.get("RANK", "0") == "0"


def _device(name: str | None) -> str:
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def cmd_train(args: argparse.Namespace) -> int:
    from seqformer.recipe import LMRecipe, load_recipe
    from seqformer.tasks.transduction import Transducer, check_resumable, load_splits, train

    recipe = load_recipe(args.recipe, args.set)
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return launch_torchrun(args.nproc)
    out = Path(args.out or f"runs/{recipe.name}")
    if isinstance(recipe, LMRecipe):
        return train_lm(args, recipe, out)
    from seqformer.cli_encoder import is_encoder_recipe, train_encoder

    if is_encoder_recipe(recipe):
        return train_encoder(args, recipe, out)
    from seqformer.recipe_decision import DecisionRecipe

    if isinstance(recipe, DecisionRecipe):
        from seqformer.cli_decision import train_decision

        return train_decision(args, recipe, out)
    from seqformer.recipe_vision import VisionRecipe

    if isinstance(recipe, VisionRecipe):
        from seqformer.cli_vision import train_vision

        return train_vision(args, recipe, out)
    from seqformer.recipe_speech import SpeechRecipe

    if isinstance(recipe, SpeechRecipe):
        from seqformer.cli_speech import train_speech

        return train_speech(args, recipe, out)
    from seqformer.recipe_audio import AudioRecipe

    if isinstance(recipe, AudioRecipe):
        from seqformer.cli_audio import train_audio

        return train_audio(args, recipe, out)
    from seqformer.recipe_ssl import CTCRecipe, PretrainRecipe

    if isinstance(recipe, PretrainRecipe | CTCRecipe):
        from seqformer.cli_speech import train_ssl

        return train_ssl(args, recipe, out)
    if getattr(recipe, "task", None) == "image-caption":
        from seqformer.cli_caption import train_caption

        return train_caption(args, recipe, out)
    if getattr(recipe, "task", None) in ("codec", "codec-tts"):
        from seqformer.cli_codec import train_codec

        return train_codec(args, recipe, out)
    if getattr(recipe, "task", None) == "text-to-speech":
        from seqformer.cli_tts import train_tts

        return train_tts(args, recipe, out)
    if args.resume:
        check_resumable(out)  # before the corpus is read: a typo here should fail fast
    splits = load_splits(recipe)
    summary = train(recipe, out, resume=args.resume, splits=splits)
    if _interrupted(args, summary, out):
        return 130
    if not is_main_process():
        return 0  # rank 0 reports for the whole job
    test = splits[0]["test"]
    if test:
        transducer = Transducer.load(out, _device(recipe.train.device))
        metrics, lines = transducer.evaluate(test, progress=True)
        (out / "test.hyp.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(format_metrics(metrics, f"test ({int(metrics['n'])} sources)"))
        shown = [p.source for p in test[:EXAMPLES]]
        if recipe.data.corpus == "cmudict" and "through" not in shown:
            shown = ["through"] + shown[: EXAMPLES - 1]
        for t in transducer.transduce(shown):
            print(f"  {t.source} -> {t.texts[0]}")
        print(f"hypotheses written to {out / 'test.hyp.tsv'}")
    print(f"model saved in {out}")
    return 0


def launch_torchrun(nproc: int) -> int:
    """``seqformer train --nproc N ...`` = ``torchrun --nproc-per-node N -m seqformer train ...``.

    The same command line is re-run in N processes (without ``--nproc``); the Trainer finds
    its rank in the environment torchrun sets.
    """
    import subprocess

    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            argv.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "seqformer", *argv]
    print("running: " + " ".join(command[2:]), file=sys.stderr)
    return subprocess.call(command)


def _interrupted(args: argparse.Namespace, summary: dict, out: Path) -> bool:
    if summary.get("interrupted"):
        print(f"interrupted at step {summary.get('step')}; resume with: seqformer train "
              f"{args.recipe} --out {out} --resume", file=sys.stderr)
    return bool(summary.get("interrupted"))


def classifier_trained(args: argparse.Namespace, out: Path, summary: dict,
                       test: dict[str, float]) -> int:
    """The end of ``train`` for an image or audio classifier: 130 when interrupted, otherwise
    the best checkpoint's test metrics (when there is a test split) and where the model is."""
    from seqformer.tasks.classify import describe

    if _interrupted(args, summary, out):
        return 130
    if test:
        print("test: " + describe({k[5:]: v for k, v in test.items()}))
    print(f"model saved in {out}")
    return 0


def data_or_test_split(args: argparse.Namespace, run: Any, read: Any, one: str,
                       data_file: str) -> tuple[Any, str]:
    """What ``evaluate`` scores a classifier ``run`` on, and its name: the one ``--data`` path
    read by ``read(path, "--data")``, or else the test split of the run's recipe. ``one`` and
    ``data_file`` say what --data to give (a UserError otherwise)."""
    if args.data:
        if len(args.data) != 1:
            raise UserError(f"evaluate: give {one}")
        return read(args.data[0], "--data"), args.data[0]
    data = run.test_split()
    if data is None:
        raise UserError(f"evaluate: {args.model[0]} has no recipe test split; give --data "
                        f"{data_file}")
    return data, "the recipe's test split"


def train_lm(args: argparse.Namespace, recipe, out: Path) -> int:
    """Train a language model, then show a sample from the best weights."""
    import torch

    from seqformer.tasks import lm

    summary = lm.train(recipe, out, resume=args.resume)
    if _interrupted(args, summary, out):
        return 130
    if not is_main_process():
        return 0
    model = lm.LanguageModel.load(out, _device(recipe.train.device))
    generator = torch.Generator(device=model.device).manual_seed(recipe.train.seed)
    prompt = recipe.generate.prompt
    sample = model.complete(prompt, generator=generator)
    print(f"sample (temperature {recipe.generate.temperature}):\n{prompt}{sample}")
    print(f"model saved in {out}")
    return 0


def format_metrics(metrics: dict[str, float], title: str) -> str:
    parts = [f"{k.upper()} {v:.2f}" for k, v in metrics.items() if k != "n"]
    return f"{title}: " + "  ".join(parts)


def read_inputs(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    if args.text:
        return list(args.text), [f"argument {i + 1}" for i in range(len(args.text))]
    if args.input:
        from seqformer.data.corpus import read_lines_numbered

        rows = [(n, t) for n, t in read_lines_numbered(args.input) if t.strip()]
        if not rows:
            raise DataError(f"{args.input}: empty input; give at least one non-empty line")
        return [t for _, t in rows], [f"{args.input}:{n}" for n, _ in rows]
    if sys.stdin.isatty():
        raise DataError("no input: give TEXT arguments, --input FILE, or pipe lines on stdin")
    rows = [(n, line.rstrip("\r\n")) for n, line in enumerate(sys.stdin, 1)]
    rows = [(n, t) for n, t in rows if t.strip()]
    if not rows:
        raise DataError("<stdin>: empty input; pipe at least one non-empty line")
    return [t for _, t in rows], [f"<stdin>:{n}" for n, _ in rows]


def decoding_controls(args: argparse.Namespace) -> dict:
    """The ``Transducer.transduce`` keywords of the decoding-control flags; it validates them."""
    return {"penalty": args.penalty, "min_length": args.min_length,
            "max_length": args.max_length,
            "no_repeat_ngram": args.no_repeat_ngram,
            "repetition_penalty": args.repetition_penalty, "bad_words": args.bad_words,
            "prefix": args.prefix}


def load_transducer(args: argparse.Namespace):
    """The model of ``--model``, or the ensemble of every ``--model`` given."""
    from seqformer.tasks.transduction import Transducer

    return Transducer.load_ensemble(args.model, _device(args.device), args.combine,
                                    args.int8, args.static)


def one_model(args: argparse.Namespace, command: str) -> str:
    if len(args.model) > 1:
        raise UserError(f"{command} takes one --model; ensembles are for transduce and evaluate")
    return args.model[0]


def cmd_transduce(args: argparse.Namespace) -> int:
    transducer = load_transducer(args)
    sources, where = read_inputs(args)
    outs = transducer.transduce(sources, beam=args.beam, alpha=args.alpha, nbest=args.nbest,
                                where=where, progress=len(sources) > 100,
                                **decoding_controls(args))
    for out in outs:
        if args.nbest and args.nbest > 1:
            for text, hyp in zip(out.texts, out.hypotheses):
                print(f"{out.source}\t{text}\t{hyp.score:.4f}")
        else:
            print(out.texts[0] if not args.show_source else f"{out.source}\t{out.texts[0]}")
    return 0


def _family(model_dir: str) -> str:
    from seqformer.models.seq2seq import read_model_config

    return str(read_model_config(model_dir).get("family", "seq2seq"))


def read_prompt(args: argparse.Namespace) -> str:
    """``--prompt`` text or ``--prompt-file`` contents (few-shot examples), verbatim."""
    if args.prompt_file is None:
        return args.prompt or ""
    from seqformer.data.corpus import read_text

    return read_text(args.prompt_file, "prompt file", "--prompt-file")


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from seqformer.recipe import check_sampling
    from seqformer.tasks.lm import LanguageModel

    if args.num < 1:
        raise UserError(f"--num must be >= 1, got {args.num}")
    # Unset flags (None) fall back to the run's recipe, which was validated when it was read.
    check_sampling(args.max_new or 0, args.temperature or 0.0, args.top_k, args.top_p)
    prompt = read_prompt(args)
    model = LanguageModel.load(args.model, _device(args.device))
    generator = torch.Generator(device=model.device).manual_seed(args.seed)
    # Shells make a real newline awkward to type, so "\\n" and "\\t" are understood too.
    stops = [s.replace("\\n", "\n").replace("\\t", "\t") for s in args.stop]
    if args.beam > 1:  # the likeliest continuations, not samples
        hyps = model.beam(prompt, args.beam, args.max_new, args.nbest, args.alpha,
                          args.penalty, args.min_new, args.no_repeat_ngram, args.bad_words)
        for text, score in hyps:
            print(f"{prompt}{text}" + (f"\t{score:.4f}" if args.nbest > 1 else ""))
        return 0
    if args.num > 1:  # drawn together as one batch; each printed when all are done
        texts = model.samples(prompt, args.num, args.max_new, args.temperature, args.top_k,
                              args.top_p, generator, stops, args.repetition_penalty,
                              args.min_new, args.no_repeat_ngram, args.bad_words)
        for i, text in enumerate(texts):
            print(f"--- sample {i + 1} ---\n{prompt}{text}", flush=True)
        return 0
    for _ in range(args.num):
        sys.stdout.write(prompt)
        for piece in model.stream(prompt, args.max_new, args.temperature, args.top_k,
                                  args.top_p, generator, stops,
                                  args.repetition_penalty, args.min_new,
                                  args.no_repeat_ngram, args.bad_words):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if _family(args.model[0]) == "gpt":
        return evaluate_lm(args)
    if _family(args.model[0]) == "decision":  # Decision Transformer: online rollouts
        from seqformer.cli_decision import evaluate_decision

        return evaluate_decision(args)
    if _family(args.model[0]) == "vit":  # Vision Transformer: --data FILE.npz or the test split
        from seqformer.cli_vision import evaluate_vision

        return evaluate_vision(args)
    if _family(args.model[0]) in ("whisper", "wav2vec2-ctc"):  # speech to text: --data or test
        from seqformer.cli_speech import evaluate_speech

        return evaluate_speech(args)
    if _family(args.model[0]) in ("ast", "wav2vec2-classify", "smile-classify"):  # audio
        from seqformer.cli_audio import evaluate_audio

        return evaluate_audio(args)
    if _family(args.model[0]) == "captioner":  # image captioning: --data or the test split
        from seqformer.cli_caption import evaluate_caption

        return evaluate_caption(args)
    if _family(args.model[0]) == "speecht5-tts":  # text to speech: --data or the test split
        from seqformer.cli_tts import evaluate_tts

        return evaluate_tts(args)
    if _family(args.model[0]) in ("encodec", "valle"):  # codec / VALL-E: --data or test split
        from seqformer.cli_codec import evaluate_codec

        return evaluate_codec(args)
    if _family(args.model[0]) in ("bert", "cnn", "rnn-classify"):  # BERT heads, baselines
        from seqformer.cli_encoder import evaluate_encoder

        return evaluate_encoder(args)
    from seqformer.tasks.transduction import read_pairs, recipe_test_split

    # Without --data: the test split of the recipe the (first) run was trained with.
    pairs, name = ((read_pairs(args.data), " ".join(args.data)) if args.data
                   else recipe_test_split(args.model[0]))
    transducer = load_transducer(args)
    metrics, lines = transducer.evaluate(pairs, beam=args.beam, alpha=args.alpha,
                                         progress=True, **decoding_controls(args))
    print(format_metrics(metrics, f"{name} ({int(metrics['n'])} sources)"))
    print_signatures(pairs, lines)
    out = Path(args.out) if args.out else Path(args.model[0]) / "eval.hyp.tsv"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"hypotheses written to {out}")
    return 0


def print_signatures(pairs: list, lines: list[str]) -> None:
    """sacrebleu's signatures, so scores can be compared with published ones, and a warning
    when the text looks tokenized (sacrebleu tokenizes again, giving incomparable scores)."""
    from seqformer.metrics import looks_tokenized, signatures
    from seqformer.tasks.transduction import group_references

    _, references = group_references(pairs)
    hyps = [line.split("\t", 1)[1] for line in lines]
    for name, signature in signatures(hyps, [list(r) for r in references]).items():
        print(f"  {name.upper()} signature: {signature}")
    if looks_tokenized([r[0] for r in references]) or looks_tokenized(hyps):
        print("warning: the text looks tokenized (e.g. 'word .' or 'don 't'); BLEU/chrF/TER "
              "tokenize by themselves, so detokenize first or the scores match no published "
              "result", file=sys.stderr)


def evaluate_lm(args: argparse.Namespace) -> int:
    from seqformer.data.lm import read_text_files
    from seqformer.tasks.lm import LanguageModel, recipe_heldout_text

    run = one_model(args, "evaluate (a language model)")
    # Without --text: the whole held-out text of the recipe the run was trained on.
    text, name = ((read_text_files(args.text), " ".join(args.text)) if args.text
                  else recipe_heldout_text(run))
    model = LanguageModel.load(run, _device(args.device))
    m = model.perplexity(text, name)
    print(f"{name} ({int(m['tokens']):,} tokens, {int(m['chars']):,} characters):"
          f" perplexity {m['ppl']:.3f}  nll {m['nll']:.4f} nats/token  bpc {m['bpc']:.4f}")
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from seqformer.tasks.transduction import Transducer
    from seqformer.viz.attention import attention_maps, draw, html_report, save_png

    if not args.out and not args.html:
        raise UserError("attention: give --out FIG.png and/or --html REPORT.html")
    if args.static:
        raise UserError("attention reads weights off the plain model; drop --static")
    model_dir = one_model(args, "attention")
    if _family(model_dir) == "vit":
        return vit_attention(args, model_dir)
    transducer = Transducer.load(model_dir, _device(args.device), args.int8)
    maps = attention_maps(transducer, args.text, beam=args.beam or 1)
    print(f"{maps.source} -> {maps.output}")
    if args.out:
        head = None if args.mean or args.head is None else args.head
        fig = draw(maps, args.kind, args.layer, head, grid=args.grid,
                   heads_panels=args.heads and not args.grid)
        print(f"chart written to {save_png(fig, args.out)}")
    if args.html:
        images = html_report(maps, args.html)
        print(f"report with {images} charts written to {args.html}")
    return 0


# The attention flags that chart a decoding, with their defaults: a ViT run refuses them, since
# its one chart already shows every layer (mean of heads) and the rollout.
DECODING_ATTENTION_FLAGS = {"kind": "cross", "layer": -1, "head": None, "heads": False,
                            "grid": False, "html": None, "beam": None, "alpha": None,
                            "penalty": None, "int8": False, "combine": "logprob"}


def vit_attention(args: argparse.Namespace, model_dir: str) -> int:
    """``attention`` of a ``family: vit`` run: the image (read as ``classify`` reads it), its
    attention rollout and each layer's [CLS] attention, one PNG."""
    from seqformer.cli_classify import read_image_inputs
    from seqformer.tasks.vision import ImageClassifier
    from seqformer.viz.attention import save_png
    from seqformer.viz.vit_attention import draw, vit_attention_maps

    given = [f"--{name.replace('_', '-')}" for name, default in DECODING_ATTENTION_FLAGS.items()
             if getattr(args, name) != default]
    if given or not args.out:
        raise UserError(f"attention: {model_dir} is a ViT run, charted whole (rollout and "
                        "every layer, mean of heads): give IMAGE --out FIG.png"
                        + (f"; drop {' '.join(given)}" if given else ""))
    if not Path(args.text).is_file():  # before the model: a bad path fails fast
        raise DataError(f"{args.text}: no such image file (give a .png or .npy image)")
    classifier = ImageClassifier.load(model_dir, _device(args.device))
    maps = vit_attention_maps(classifier, read_image_inputs([args.text], classifier)[0],
                              args.text)
    print(f"{args.text} -> {maps.label} ({maps.probability:.4f})")
    print(f"chart written to {save_png(draw(maps), args.out)}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from seqformer.viz.attention import save_png
    from seqformer.viz.curves import plot_curves

    out = Path(args.out) if args.out else Path(args.run) / "curves.png"
    print(f"curves written to {save_png(plot_curves(args.run, args.metric), out)}")
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from seqformer.training.averaging import average_run

    paths = average_run(args.run, args.last, args.out)
    print(f"averaged {len(paths)} checkpoints ({paths[0].stem} .. {paths[-1].stem}) of "
          f"{args.run} into {args.out}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    """Every bundled recipe with its task and the first sentence of its header comment, so a
    user can pick one without opening the YAML files."""
    from seqformer.recipe import bundled_recipes, recipe_summary

    rows = [(name, *recipe_summary(name)) for name in bundled_recipes()]
    width = max(len(name) for name, _, _ in rows)
    task_width = max(len(task) for _, task, _ in rows)
    for name, task, summary in rows:
        print(f"{name:<{width}}  {task:<{task_width}}  {summary}".rstrip())
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from seqformer.tasks.compare import load_compare, run_compare

    compare = load_compare(args.recipe, args.set)
    out = Path(args.out or f"runs/{compare.name}")
    rows = run_compare(compare, out)
    print((out / "compare.md").read_text(encoding="utf-8"), end="")
    print(f"{len(rows)} runs; table in {out / 'compare.md'}, plot in {out / 'compare.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqformer", description="Sequence learning with Transformers: train a recipe, "
        "then decode, score, inspect, compare or convert its models. 'seqformer recipes' "
        "lists the bundled recipes; 'seqformer COMMAND -h' explains a command.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a recipe")
    p.add_argument("recipe", help="recipe YAML file or bundled recipe name (see 'recipes')")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set model.layers=4")
    p.add_argument("--out", help="run directory (default runs/<recipe name>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train data-parallel in N processes (torchrun; one per GPU, or gloo "
                   "on CPU); the recipe's batch is the global batch")
    p.set_defaults(func=cmd_train)

    decode_args = argparse.ArgumentParser(add_help=False)
    decode_args.add_argument("--model", required=True, action="append",
                             help="run directory from 'train'; repeat it to decode with an "
                             "ensemble of runs that share tokenizers")
    decode_args.add_argument("--combine", choices=["logprob", "prob"], default="logprob",
                             help="ensemble rule: mean of log-probs (default) or of probs")
    decode_args.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy)")
    decode_args.add_argument("--alpha", type=float, default=None, help="length penalty alpha")
    decode_args.add_argument("--penalty", choices=["gnmt", "plain"], default=None,
                             help="length penalty: gnmt ((5+len)/6)^alpha or plain len^alpha "
                             "(default from the recipe, gnmt)")
    decode_args.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    decode_args.add_argument("--int8", action="store_true",
                             help="int8 weights in the Linear layers: faster CPU decoding, "
                             "slightly different scores")
    decode_args.add_argument("--static", action="store_true",
                             help="fixed-shape caches, each decoding step one CUDA graph: "
                             "several times faster on a GPU once each batch shape has been "
                             "captured (the first batches compile); no gain on a CPU")

    controls = argparse.ArgumentParser(add_help=False)
    controls.add_argument("--max-length", type=int, default=None,
                          help="maximum output tokens")
    controls.add_argument("--min-length", type=int, default=None, metavar="N",
                          help="no output shorter than N tokens")
    controls.add_argument("--no-repeat-ngram", type=int, default=None, metavar="N",
                          help="no N-gram of output tokens occurs twice (0 = off)")
    controls.add_argument("--repetition-penalty", type=float, default=None, metavar="X",
                          help="> 1 discourages output tokens already produced (CTRL; 1 = off)")
    controls.add_argument("--bad-words", nargs="+", default=[], metavar="TEXT",
                          help="target texts the output must never contain")
    controls.add_argument("--prefix", default=None, metavar="TEXT",
                          help="force the output to start with this target text")

    p = sub.add_parser("transduce", parents=[decode_args, controls],
                       help="map input text to output text")
    p.add_argument("text", nargs="*", help="inputs (default: lines of --input or stdin)")
    p.add_argument("--input", help="file with one input per line")
    p.add_argument("--nbest", type=int, default=None, help="print the N best with scores")
    p.add_argument("--show-source", action="store_true", help="print source<TAB>output")
    p.set_defaults(func=cmd_transduce)

    p = sub.add_parser("generate", help="sample text from a language model, streaming it")
    p.add_argument("--model", required=True, help="run directory of a 'task: lm' recipe")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", help="text to continue (default: start from nothing)")
    src.add_argument("--prompt-file", help="file whose text is the prompt, e.g. few-shot "
                     "examples followed by an unfinished one")
    p.add_argument("--max-new", type=int, default=None, help="most tokens to add (default "
                   "from the recipe's generate section, 200)")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy; < 1 is more "
                   "conservative, > 1 more random (default 0.8)")
    p.add_argument("--top-k", type=int, default=None, help="sample from the K most likely "
                   "tokens (0 = all; default 50)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus: the most likely tokens "
                   "covering probability P, in (0, 1]")
    p.add_argument("--repetition-penalty", type=float, default=None,
                   help="> 1 discourages tokens already present")
    p.add_argument("--min-new", type=int, default=0, metavar="N",
                   help="no end of text before N new tokens")
    p.add_argument("--no-repeat-ngram", type=int, default=0, metavar="N",
                   help="no N-gram of new tokens occurs twice (0 = off)")
    p.add_argument("--bad-words", nargs="+", default=[], metavar="TEXT",
                   help="texts the continuation must never contain")
    p.add_argument("--seed", type=int, default=1, help="random seed: same seed, same text")
    p.add_argument("--num", type=int, default=1, help="number of samples")
    p.add_argument("--beam", type=int, default=1, metavar="N",
                   help="beam search with N beams instead of sampling (1 = sample)")
    p.add_argument("--nbest", type=int, default=1, help="with --beam: print the N best with "
                   "their scores")
    p.add_argument("--alpha", type=float, default=0.0, help="with --beam: length penalty alpha")
    p.add_argument("--penalty", choices=["gnmt", "plain"], default="gnmt",
                   help="with --beam: gnmt ((5+len)/6)^alpha or plain len^alpha")
    p.add_argument("--stop", action="append", default=[], metavar="STRING",
                   help="stop before this text (repeatable; \\n and \\t are understood), "
                   "e.g. --stop '\\n\\n' to end at a blank line")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("evaluate", parents=[decode_args, controls],
                       help="score a model: a test set (encoder-decoder) or a text (GPT)")
    p.add_argument("--data", nargs="+", help="TSV file, or source and target files (default: "
                   "the test split of the run's recipe)")
    p.add_argument("--text", nargs="+", help="text file(s) for a language model: perplexity "
                   "and bits per character (default: the recipe's held-out text)")
    p.add_argument("--out", help="where to write hypotheses (default MODEL/eval.hyp.tsv)")
    p.add_argument("--asr", metavar="RUN", help="text to speech: also transcribe the generated "
                   "speech with this speech-to-text run (the round trip)")
    p.add_argument("--vocoder", default=None, help="text to speech: griffin-lim (default) or "
                   "a HiFi-GAN directory, for --asr")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("attention", parents=[decode_args],
                       help="draw what the model attends to for one input (text for an "
                       "encoder-decoder, an image file for a ViT)")
    p.add_argument("text", help="the input to decode and chart; for a ViT run an image file "
                   "(.png or .npy, read like classify's), charted as attention rollout and "
                   "each layer's [CLS] attention")
    p.add_argument("--kind", default="cross", choices=["cross", "encoder", "decoder"],
                   help="encoder-decoder (cross), encoder self- or decoder self-attention")
    p.add_argument("--layer", type=int, default=-1, help="layer index (default: last)")
    p.add_argument("--head", type=int, default=None, help="one head (default: mean of heads)")
    p.add_argument("--mean", action="store_true", help="average the heads (the default)")
    p.add_argument("--heads", action="store_true", help="one panel per head of --layer")
    p.add_argument("--grid", action="store_true", help="every layer x head in one figure")
    p.add_argument("--out", help="PNG file for the chart")
    p.add_argument("--html", help="self-contained HTML page with every layer and head")
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser("plot", help="training curves of a run from its log.jsonl")
    p.add_argument("run", help="run directory")
    p.add_argument("--metric", help="validation metric to plot (default: the first one)")
    p.add_argument("--out", help="PNG file (default RUN/curves.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("average", help="average the last checkpoints of a run into a model")
    p.add_argument("run", help="run directory trained with train.keep_checkpoints set")
    p.add_argument("--last", type=int, default=5, help="how many of the newest checkpoints")
    p.add_argument("--out", required=True, help="model directory to write")
    p.set_defaults(func=cmd_average)

    p = sub.add_parser("recipes", help="list bundled recipes with their task and purpose")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("compare", help="train several model kinds on one task and tabulate "
                       "parameters, speed and accuracy")
    p.add_argument("recipe", help="compare recipe (e.g. compare-g2p, compare-reverse)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set train.max_steps=100")
    p.add_argument("--out", help="output directory (default runs/<recipe name>)")
    p.set_defaults(func=cmd_compare)

    from seqformer.cli_encoder import add_parsers

    add_parsers(sub)  # fill-mask, embed
    from seqformer.cli_interop import add_parsers as add_interop_parsers

    add_interop_parsers(sub)  # import, export (Hugging Face)
    from seqformer.cli_speech import add_parsers as add_speech_parsers

    add_speech_parsers(sub)  # transcribe
    from seqformer.cli_caption import add_parsers as add_caption_parsers

    add_caption_parsers(sub)  # caption
    from seqformer.cli_tts import add_parsers as add_tts_parsers

    add_tts_parsers(sub)  # speak
    from seqformer.cli_classify import add_parsers as add_classify_parsers

    add_classify_parsers(sub)  # classify
    from seqformer.cli_word2vec import add_parsers as add_word2vec_parsers

    add_word2vec_parsers(sub)  # word2vec
    from seqformer.cli_scale import add_parsers as add_scale_parsers

    add_scale_parsers(sub)  # scale
    from seqformer.cli_fewshot import add_parsers as add_fewshot_parsers

    add_fewshot_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"seqformer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seqformer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`seqformer transduce ... | head`): not an error worth a
        # traceback. Point stdout at /dev/null so the interpreter's final flush stays quiet,
        # and exit as a process killed by SIGPIPE would (128 + 13).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
