"""The command line: every command's flags, declared here, and the examples its help shows."""

from __future__ import annotations

import argparse

from neon_jax.agent import config as agent_config
from neon_jax.choices import (
    CUTS,
    DEFAULT_CANDIDATES,
    PROTOCOLS,
    REWARDS,
    SELECTIONS,
    SUITES,
    ZOO_SPLITS,
)
from neon_jax.cli.commands import (
    cmd_datasets,
    cmd_evaluate,
    cmd_export,
    cmd_prune,
    cmd_rollout,
    cmd_train_agent,
    cmd_zoo,
)
from neon_jax.presets import PRESETS

DESCRIPTION = ("neon-jax: prune dense classifiers with NEON's trained agent, build zoos of base networks, train and "
               "evaluate agents against the paper's baselines, and export pruned networks to PyTorch / ONNX.")


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="folder(s) of *.csv / *.csv.gz datasets (default: $NEON_JAX_DATA_DIR; "
                             "scikit-learn's iris, wine, breast_cancer, digits need none)")


_EXAMPLES = {
    "neon-jax": """examples:
  neon-jax prune --dataset breast_cancer --tau 5 --out runs/breast_cancer     # the main job, no download
  neon-jax datasets --data-dir ../shared/data                                  # what can be loaded
  neon-jax <command> --help                                                    # each command's options""",
    "datasets": """examples:
  neon-jax datasets                                  # scikit-learn's bundled sets
  neon-jax datasets --data-dir ../shared/data        # and every CSV there (task, rows, features, classes)""",
    "zoo": """examples:
  neon-jax zoo --dataset iris --n 4 --preset tiny --out runs/zoo           # 4 small networks, 1 held out
  neon-jax zoo --dataset no2,pm10 --data-dir ../shared/data --out runs/zoo_cpu  # the paper's 30 per dataset""",
    "rollout": """examples:
  neon-jax rollout --dataset iris --zoo runs/zoo --policy pretrained --tau 5 --json runs/pretrained.json
  neon-jax rollout --dataset iris --zoo runs/zoo --policy keep:0.5 --json runs/keep.json  # a fixed rule""",
    "train-agent": """examples:
  neon-jax train-agent --zoo runs/zoo_cpu --data-dir ../shared/data --unseen satimage --tau 5 --out runs/agent
  neon-jax prune --dataset iris --agent runs/agent --tau 5                 # then prune with it""",
    "prune": """examples:
  neon-jax prune --dataset breast_cancer --tau 5 --out runs/bc              # train a base network, prune it
  neon-jax prune --dataset data.csv --network model.pt --tau 1 --out runs/mine --export torch,onnx
  neon-jax prune --dataset iris --select last                              # the paper's single episode""",
    "export": """examples:
  neon-jax export --network runs/bc/pruned --format all --out runs/bc/export""",
    "evaluate": """examples:
  neon-jax evaluate --datasets iris,wine --methods neon,neon_best,structured --tau 5 --out runs/eval
  neon-jax evaluate --suite neon --zoo-root runs/zoo_cpu --data-dir ../shared/data/neon \\
      --methods neon,random,magnitude,structured,lap --tau 1,5,50 --passes 1,4 --out runs/eval_cpu""",
}


def _add_tau(p, several: bool = False) -> None:
    """--tau, the one declaration: text, validated by the job it reaches (one clear line, never a traceback)."""
    p.add_argument("--tau", default="5", help="comma-separated tolerances for neon (paper: 1,5,50)" if several else
                   "tolerated accuracy drop in points, 0..100 (paper: 1, 5, 50; default: 5)")


def _add_passes(p, several: bool = False) -> None:
    """--passes, the one declaration: visits of every hidden layer per episode."""
    if several:
        p.add_argument("--passes", default="4", help="comma-separated passes (paper: 1,4)")
    else:
        p.add_argument("--passes", type=int, default=4,
                       help="visits of every hidden layer per episode (paper: 1 or 4; default: 4, as the shipped "
                            "agents were trained)")


def _add_devices(p) -> None:
    """--devices and the multi-process flags, the one declaration (validated before any work, one clear line)."""
    g = p.add_argument_group("devices and hosts")
    g.add_argument("--devices", type=int, default=None,
                   help="devices the batches are split over (default: every device of every process; 1: one "
                        "device, the unsharded path)")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="several processes (jax.distributed): process 0's address, the same in every process "
                        "(default: $NEON_JAX_COORDINATOR; none: one process)")
    g.add_argument("--num-processes", type=int, default=None,
                   help="with --coordinator: processes in all (default: $NEON_JAX_NUM_PROCESSES)")
    g.add_argument("--process-id", type=int, default=None,
                   help="with --coordinator: this process's index 0..N-1 (default: $NEON_JAX_PROCESS_ID); process 0 "
                        "writes the results")


def build_parser() -> argparse.ArgumentParser:
    """The `neon-jax` parser: one sub-command per job, each declared by its own function below."""
    parser = argparse.ArgumentParser(prog="neon-jax", description=DESCRIPTION, epilog=_EXAMPLES["neon-jax"],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser

    def add_parser(name, **kwargs):  # every command's --help ends with its examples
        return add(name, epilog=_EXAMPLES[name], formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    sub.add_parser = add_parser
    _datasets_command(sub)
    _zoo_command(sub)
    _rollout_command(sub)
    _train_agent_command(sub)
    _prune_command(sub)
    _export_command(sub)
    _evaluate_command(sub)
    return parser


def _datasets_command(sub) -> None:
    p = sub.add_parser("datasets", help="list the datasets that can be loaded")
    _add_data_args(p)
    p.set_defaults(func=cmd_datasets)


def _zoo_command(sub) -> None:
    p = sub.add_parser("zoo", help="train N random base networks per dataset and save them")
    p.add_argument("--dataset", required=True, help="dataset name(s), comma-separated, or a CSV path")
    _add_data_args(p)
    p.add_argument("--n", type=int, default=30, help="networks per dataset (paper: 30)")
    p.add_argument("--heldout", type=int, default=None,
                   help="networks held out from agent training (default: a fifth of --n, the paper's 6 of 30)")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="scale preset (default: cpu)")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's training epochs")
    p.add_argument("--seed", type=int, default=0, help="seed of the architectures, weights and held-out choice "
                                                       "(default: 0)")
    p.add_argument("--out", required=True, help="output folder; the zoo goes to OUT/<dataset>/")
    p.add_argument("--overwrite", action="store_true", help="replace an existing zoo")
    p.add_argument("--quiet", action="store_true", help="no progress bar; one line per zoo")
    _add_devices(p)
    p.set_defaults(func=cmd_zoo)


def _rollout_command(sub) -> None:
    p = sub.add_parser("rollout", help="prune every zoo network with one policy (batched roll-outs) and report")
    p.add_argument("--dataset", required=True,
                   help="dataset name(s), comma-separated; each zoo is read from ZOO/<name>/")
    _add_data_args(p)
    p.add_argument("--zoo", required=True, help="folder holding the zoos (the --out of `neon-jax zoo`)")
    p.add_argument("--policy", default="random",
                   help="random (uniform over the 5 keep fractions), pretrained (the shipped agent nearest "
                        "--tau), an agent PATH, keep:F (always keep F) or while:F:D (keep F while the validation "
                        "accuracy is at most D points down)")
    _add_passes(p)
    p.add_argument("--cut", default="reinit", choices=CUTS, help="cut semantics (reinit: the paper's)")
    _add_tau(p)
    p.add_argument("--which", default="all", choices=ZOO_SPLITS, help="networks of each zoo")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled actions (default: 0)")
    p.add_argument("--batch", type=int, default=32, help="networks per compiled batch")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="fine-tune schedule (default: the zoo's preset; widths must match the zoo's)")
    p.add_argument("--json", required=True, help="write the settings, per-network rows and totals here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_rollout)


def _train_agent_command(sub) -> None:
    p = sub.add_parser("train-agent", help="train a NEON agent on the training networks of many zoos")
    p.add_argument("--zoo", required=True, help="folder of zoos (one subfolder per dataset)")
    p.add_argument("--datasets", default=None, help="comma-separated datasets to train on (default: every zoo "
                                                    "that is not --unseen)")
    p.add_argument("--unseen", default=None, help="comma-separated datasets held out entirely, evaluated at the end")
    _add_data_args(p)
    _add_passes(p)
    _add_tau(p)
    p.add_argument("--episodes", type=int, default=None, help="default: the original's 10 N + min(2N, 500)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS), help="must match the zoos' preset")
    p.add_argument("--cut", default="reinit", choices=CUTS,
                   help="what a cut keeps: reinit (the paper's: re-initialise and fine-tune) or keep_best")
    p.add_argument("--reward", default="neon", choices=REWARDS, help="reward (neon: the paper's cubic reward)")
    p.add_argument("--legacy", action="store_true",
                   help="reproduce the original's bugs (spec §12 A0, B1, B2, B6, B9: EnvConfig.LEGACY_FIELDS and "
                        "AgentConfig.LEGACY_FIELDS)")
    agent_config.add_flags(p)
    p.add_argument("--max-minutes", type=float, default=None, help="stop training after this wall time")
    p.add_argument("--buckets", action="store_true",
                   help="beyond the paper: every batch from one width bucket, run at that bucket's shape (zoos of "
                        "mixed widths pay for their own widths; default: the original's round-robin)")
    p.add_argument("--checkpoint-every", type=int, default=10,
                   help="iterations (batches of episodes) between checkpoints (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the agent's weights and actions (default: 0)")
    p.add_argument("--out", required=True,
                   help="run folder: log.csv, checkpoint, evaluation (resumes if present, with the same settings)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in --out, deleting its checkpoint and log, instead of resuming")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument("--unseen-networks", default="all", choices=("all", "heldout"),
                   help="networks of the unseen datasets to evaluate (paper: all 30)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    _add_devices(p)
    p.set_defaults(func=cmd_train_agent)


def _prune_command(sub) -> None:
    p = sub.add_parser("prune", help="prune a network on a dataset with a trained agent (the main job)")
    p.add_argument("--dataset", required=True,
                   help="dataset name (see `neon-jax datasets`) or a CSV file (target in the last column); with "
                        "--preprocess none: your training rows, used as they are")
    _add_data_args(p)
    p.add_argument("--preprocess", default="neon", choices=("neon", "none"),
                   help="neon: neon_jax's preprocessing (min-max scaling, one-hot encoding, the preset's row cap, "
                        "its own 70/30 split); none: the CSV rows exactly as given, your split (--test, "
                        "--validation), no row cap")
    p.add_argument("--test", default=None,
                   help="with --preprocess none: a CSV of test rows that only report (default: none; the report "
                        "then gives the validation rows' accuracy and says so)")
    p.add_argument("--validation", default=None,
                   help="with --preprocess none: a CSV of rows that choose among the candidates (default: 20%% "
                        "of the training rows, split off with --seed)")
    p.add_argument("--no-input-check", action="store_true",
                   help="prune even when the network does no better than always guessing the most common class "
                        "on its training rows (a sign the rows are preprocessed otherwise than it was trained)")
    p.add_argument("--network", default=None,
                   help="the network to prune: a scikit-learn MLPClassifier or Pipeline ending in one (.skops; "
                        ".pkl/.joblib with --trust-pickle), a PyTorch file (.pt/.pth: torch.save of an "
                        "nn.Sequential of Linear/ReLU/Tanh/Sigmoid/BatchNorm1d/Dropout[/Softmax], or of "
                        "{'state_dict', 'layers'}), a .safetensors export, or a neon_jax network (.npz/.json); "
                        "default: train a random base network first")
    p.add_argument("--small-data", default="off", choices=("off", "auto", "on", "share"),
                   help="off: the choice keeps tau on the validation rows; auto: when one validation row is worth "
                        "more than tau/2 points (on: always), a candidate must stay within tau less one standard "
                        "error of the validation accuracy (measured: no fewer test losses beyond tau on small "
                        "sets, less compression; benchmarks/README.md); share: then half the training rows "
                        "choose, not 20%%")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load a scikit-learn model from a pickle (.pkl/.joblib): a pickle runs any code it holds")
    _add_tau(p)
    _add_passes(p)
    p.add_argument("--agent", default="pretrained",
                   help="pretrained (default: the shipped agent trained at the tau nearest --tau), random, or a "
                        "train-agent --out folder / checkpoint path")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                   help="scale of the base network trained when --network is not given, and of the agent's state "
                        "(default: cpu, widths 8..64, the shipped agents' scale)")
    p.add_argument("--greedy", action="store_true", help="one episode of argmax actions (the original samples)")
    p.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES,
                   help="sampled episodes rolled out together, plus one greedy episode; every network of every "
                        "episode is a candidate (default: %(default)s)")
    p.add_argument("--select", default="best", choices=SELECTIONS,
                   help="best: the candidate with the fewest parameters whose validation accuracy is within tau "
                        "(the original if none); last: the final network of one sampled episode (the paper's)")
    p.add_argument("--cut", default=None, choices=CUTS,
                   help="cut semantics (default: the one the agent was trained with)")
    p.add_argument("--refine", default="0", metavar="ROUNDS[xPOPULATION]",
                   help="beyond the paper: ROUNDS of a population search after the episodes, POPULATION widths "
                        "(default 16) per round sampled around the smallest candidates within tau, each the "
                        "original cut to them and fine-tuned, chosen by the same rule (default: 0, none)")
    p.add_argument("--refine-epochs", type=int, default=None,
                   help="the most fine-tune epochs of a refine proposal (default: the preset's fine-tune epochs)")
    p.add_argument("--refine-margin", type=float, default=0.0,
                   help="points of validation accuracy the refine search's candidates keep besides tau (default 0)")
    p.add_argument("--final-finetune", action="store_true",
                   help="beyond the paper: fine-tune the chosen network once more over every layer (kept only "
                        "when its validation accuracy does not fall)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the data split, the base network and the sampled episodes (default: 0)")
    p.add_argument("--json", default=None, help="write the report as JSON here")
    p.add_argument("--out", default=None, help="save original + pruned network and report.json in this folder")
    p.add_argument("--export", default=None,
                   help="also write the pruned network to --out as FORMATS (comma-separated: torch, onnx, "
                        "safetensors, npz, sklearn, or all = the first four), each read back and checked; "
                        "sklearn: pruned.skops, your scikit-learn model pruned, or an MLPClassifier of the "
                        "dataset's labels behind its input scaling (a Pipeline on raw rows)")
    p.add_argument("--overwrite", action="store_true", help="replace files already in --out / --json")
    p.add_argument("--quiet", action="store_true", help="no progress messages; only the result table")
    _add_devices(p)
    p.set_defaults(func=cmd_prune)


def _export_command(sub) -> None:
    p = sub.add_parser("export", help="write a network as PyTorch / ONNX / safetensors / npz files")
    p.add_argument("--network", required=True,
                   help="a neon_jax network (e.g. OUT/pruned of `neon-jax prune`), a PyTorch .pt or a .safetensors")
    p.add_argument("--format", default="torch,onnx",
                   help="comma-separated: torch (.pt, nn.Sequential), onnx (opset 17), safetensors (+ .arch.json), "
                        "npz (+ .json), or all (default: torch,onnx)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", default=None, help="file stem (default: the network file's stem)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=cmd_export)


def _evaluate_command(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate NEON, the random agent and baselines on held-out networks or "
                                        "unseen datasets; resumable grid, report.md with the paper's numbers")
    p.add_argument("--datasets", default=None,
                   help="comma-separated datasets (a zoo is built under OUT/zoos/ for each that has none under "
                        "--zoo-root)")
    p.add_argument("--suite", default=None, choices=SUITES,
                   help="neon: the paper's datasets that have a zoo; all: every zoo under --zoo-root (needs it)")
    _add_data_args(p)
    p.add_argument("--zoo-root", default=None,
                   help="folder of zoos (one subfolder per dataset, `neon-jax zoo`); default: build them under "
                        "OUT/zoos/")
    p.add_argument("--zoo-networks", type=int, default=30,
                   help="networks per zoo the evaluation builds (paper: 30)")
    p.add_argument("--zoo-heldout", type=int, default=6,
                   help="held-out networks per zoo the evaluation builds (paper: 6)")
    p.add_argument("--methods", default="neon,random",
                   help="comma-separated: neon (one episode, the paper's), neon_best (the smallest of many candidates "
                        "within tau on the validation split), random and the baselines (magnitude, structured, lap, "
                        "random_no_ft, ...)")
    p.add_argument("--candidates", default=str(DEFAULT_CANDIDATES),
                   help="neon_best: comma-separated numbers K of sampled episodes per network (plus a greedy one)")
    p.add_argument("--search", default="none",
                   help="neon_best, beyond the paper: comma-separated searches after the episodes, each none or "
                        "[ROUNDS[xPOPULATION]][:epochs=E][:margin=M][:final] (prune's --refine, --refine-epochs, "
                        "--refine-margin, --final-finetune), e.g. none,2x16:margin=2.5:final (default: none)")
    p.add_argument("--protocol", default="heldout", choices=PROTOCOLS,
                   help="heldout: each zoo's held-out networks; unseen: all networks of datasets in seeded folds")
    _add_tau(p, several=True)
    _add_passes(p, several=True)
    p.add_argument("--seeds", default="0", help="comma-separated evaluation seeds (actions are sampled)")
    p.add_argument("--greedy", action="store_true", help="also evaluate neon with argmax actions")
    p.add_argument("--agent", action="append", default=None, metavar="TAU[@FOLD]=PATH",
                   help="agent for a tau (and unseen fold): a train-agent --out folder, checkpoint or policy file; "
                        "repeat per tau; default: the shipped agent (flagged where its training tau differs)")
    p.add_argument("--settings", action="append", default=None, metavar="METHOD=S1,S2",
                   help="baseline settings (default: the baseline's own defaults)")
    p.add_argument("--amc", default=None, metavar="KEY=VALUE,...",
                   help="AMC search settings other than the original's (e.g. episodes=100,parallel_episodes=10)")
    p.add_argument("--folds", default=None, help="unseen protocol: which folds to evaluate (default: all)")
    p.add_argument("--fold-size", type=int, default=6, help="datasets per unseen fold (paper: 6)")
    p.add_argument("--fold-seed", type=int, default=0, help="seed of the unseen folds' dataset shuffle "
                                                            "(default: 0)")
    p.add_argument("--random-cut", default="reinit", choices=CUTS,
                   help="cut of the random agent (reinit: the paper's environment)")
    p.add_argument("--batch", type=int, default=32, help="networks per compiled batch")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="default: the preset of the zoos found, else cpu")
    p.add_argument("--out", required=True, help="results folder (re-running resumes; finished cells are skipped)")
    p.add_argument("--overwrite", action="store_true", help="replace an evaluation with other settings in --out")
    p.add_argument("--report-only", action="store_true", help="only rewrite report.md / summary.json / plots")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    _add_devices(p)
    p.set_defaults(func=cmd_evaluate)
