"""Command line: parse arguments and hand over to :mod:`ensemble_distill.pipeline`."""

from __future__ import annotations

import argparse
import codecs
import json
import logging
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from ensemble_distill.errors import ConfigError, EnsembleDistillError

if TYPE_CHECKING:
    from ensemble_distill.config import RunConfig

COMMANDS = {
    "run": (
        ("teacher", "distill", "evaluate"),
        "train the teacher, distil every method, evaluate, write results",
    ),
    "train-teacher": (("teacher",), "train the deep ensemble only (OUT/teacher)"),
    "distill": (("distill",), "distil every method from the teacher saved in OUT"),
    "evaluate": (("evaluate",), "evaluate the saved teacher and students, write results"),
}

# Commands that only read finished runs: no config, no pipeline step.
REPORT_COMMANDS = {
    "report": "rebuild OUT/report.html and OUT/report.md from a finished run directory",
    "compare": "put finished runs side by side in DIR/compare.html and DIR/compare.md",
}
# The commands that build the data from the config: only they take --data / --target (distill
# and evaluate read the data the saved OUT/config.yaml names).
DATA_COMMANDS = ("run", "train-teacher")
CONFIG_HELP = (
    "list every config key with its default and meaning, and the registered datasets, models, "
    "methods and inputs"
)
SWEEP_HELP = (
    "run a grid of settings (key=v1,v2 sweeps a key), training each distinct teacher once, and "
    "compare the points in DIR/sweep.md (each student's best point chosen on validation NLL) "
    "and DIR/compare.html"
)
EXPORT_HELP = (
    "export a trained student to one ONNX or TorchScript file that outputs the mean "
    "probabilities, predictive entropy and mutual information (regression: mean, aleatoric "
    "and epistemic variance)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ensemble-distill",
        description="Distil a deep ensemble into one student that keeps its uncertainty.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        add_pipeline_command(commands, name, help_text)
    commands.add_parser("config", help=CONFIG_HELP, description=CONFIG_HELP)
    add_report_commands(commands)
    add_sweep_command(commands)
    add_export_command(commands)
    return parser


def package_version() -> str:
    """The installed package's version; ``unknown`` when run from a source tree that was never
    installed (no package metadata)."""
    try:
        return metadata.version("ensemble-distill")
    except metadata.PackageNotFoundError:
        return "unknown"


def add_pipeline_command(commands: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """``NAME [--config FILE] [--data FILE.csv --target COLUMN] --out DIR ... [key=value ...]``;
    ``--data`` only where the command builds the data (:data:`DATA_COMMANDS`)."""
    data = name in DATA_COMMANDS
    data_usage = "[--data FILE.csv --target COLUMN] " if data else ""
    sub = commands.add_parser(
        name,
        help=help_text,
        description=help_text,
        usage=f"ensemble-distill {name} [--config FILE] {data_usage}--out DIR [--quiet] "
        "[--force] [key=value ...]",
        epilog="key=value: config overrides anywhere on the line, nested keys with dots "
        "(kd.temperature=2); every key and its default: ensemble-distill config",
    )
    sub.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML config file (default: built-in "
        "defaults, or OUT/config.yaml for distill/evaluate)",
    )
    if data:
        sub.add_argument(
            "--data",
            metavar="FILE.csv",
            help="your own numeric table (header row) as a regression dataset; with --target",
        )
        sub.add_argument("--target", metavar="COLUMN", help="the --data column to predict")
    sub.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    sub.add_argument("--quiet", action="store_true", help="no progress bars or notes")
    sub.add_argument(
        "--force",
        action="store_true",
        help="retrain every requested step (default: resume a run in OUT, keeping what "
        "finished with the same settings)",
    )
    add_trust_code(sub)


def add_trust_code(parser: argparse.ArgumentParser) -> None:
    """``--trust-code``: the opt-in for files that name a model by import path."""
    parser.add_argument(
        "--trust-code",
        action="store_true",
        help="let files you did not pass on this line (OUT/config.yaml, a checkpoint's "
        "manifest.json) name a model by import path, which imports and runs that code; only "
        "for folders you trust",
    )


def add_report_commands(commands: argparse._SubParsersAction) -> None:
    """``report OUT`` and ``compare OUT_A OUT_B ... --out DIR``."""
    report = commands.add_parser(
        "report", help=REPORT_COMMANDS["report"], description=REPORT_COMMANDS["report"]
    )
    report.add_argument("run_dir", type=Path, metavar="OUT", help="a run's output directory")
    compare = commands.add_parser(
        "compare", help=REPORT_COMMANDS["compare"], description=REPORT_COMMANDS["compare"]
    )
    compare.add_argument(
        "run_dirs", type=Path, nargs="+", metavar="OUT", help="run output directories"
    )
    compare.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="where to write the comparison"
    )


def add_sweep_command(commands: argparse._SubParsersAction) -> None:
    """``sweep [--config FILE] [--teacher DIR] --out DIR key=v1,v2 ... [key=value ...]``."""
    sweep = commands.add_parser(
        "sweep",
        help=SWEEP_HELP,
        description=SWEEP_HELP,
        usage="ensemble-distill sweep [--config FILE] [--teacher DIR] --out DIR [--quiet] "
        "key=v1,v2 [key=value ...]",
        epilog="A value with a comma outside brackets and quotes is swept: "
        "perturbation.eta=0.004,0.016 (two points), hydra.head_widths=[],[100,100] (two "
        "lists), methods=[kd,hydra] (one value). The grid is the product of the swept keys; "
        "each point runs into DIR/<key=value__...>; rerunning keeps the finished points.",
    )
    sweep.add_argument("--config", type=Path, metavar="FILE", help="YAML config file")
    sweep.add_argument(
        "--teacher",
        type=Path,
        metavar="DIR",
        help="a trained teacher (OUT/teacher of a run with the same teacher settings) that "
        "every point uses instead of training one",
    )
    sweep.add_argument("--out", type=Path, required=True, metavar="DIR", help="sweep directory")
    sweep.add_argument("--quiet", action="store_true", help="no progress bars or notes")


def run_sweep_command(args: argparse.Namespace) -> str:
    """Run the sweep; what to print: the tables written and each student's chosen point."""
    from ensemble_distill.sweep import parse_arguments, run_sweep  # imports torch

    swept, fixed = parse_arguments(args.overrides)
    record = run_sweep(args.out, swept, fixed, args.config, args.quiet, args.teacher)
    lines = [str(args.out / name) for name in ("sweep.md", "compare.html")]
    chosen = record["chosen"].items()
    lines += [f"{student}: {point} (chosen on validation)" for student, point in chosen]
    return "\n".join(lines)


def add_export_command(commands: argparse._SubParsersAction) -> None:
    """``export STUDENT_DIR --format onnx|torchscript [--out FILE]``."""
    export = commands.add_parser("export", help=EXPORT_HELP, description=EXPORT_HELP)
    export.add_argument(
        "student_dir", type=Path, metavar="STUDENT_DIR", help="a student: OUT/students/<method>"
    )
    export.add_argument(
        "--format",
        required=True,
        metavar="onnx|torchscript",
        help="onnx (needs the export extra: pip install -e '.[export]' in the clone) or "
        "torchscript",
    )
    export.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="the file to write (default: STUDENT_DIR/student.onnx or student.pt); its "
        "metadata also goes to FILE.json",
    )
    add_trust_code(export)


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """The config file (see :func:`config_source`), then ``--data`` and ``key=value``
    overrides."""
    from ensemble_distill.config import load_config  # imports torch: after parsing

    source = config_source(args)
    config = load_config(source, data_overrides(args) + args.overrides)
    if source is not None and args.config is None:  # OUT/config.yaml, read implicitly
        check_trusted_config(config, source, args.trust_code)
    return config


def check_trusted_config(config: RunConfig, source: Path, trust_code: bool) -> None:
    """Refuse the models that a config read from the output folder (not named on the command
    line, so perhaps written by someone else) names by import path, unless ``trust_code``."""
    from ensemble_distill.models import require_trusted

    for name in {config.model, config.student.model or config.model}:
        require_trusted(name, str(source), trust_code)


def config_source(args: argparse.Namespace) -> Path | None:
    """--config FILE, else OUT/config.yaml for steps after the first, else None (defaults)."""
    saved = args.out / "config.yaml"
    if args.config is None and args.command in ("distill", "evaluate") and saved.is_file():
        return saved
    return args.config


def data_overrides(args: argparse.Namespace) -> list[str]:
    """``--data FILE.csv --target COLUMN`` as the overrides they stand for (none for the
    commands without these options)."""
    data, target = getattr(args, "data", None), getattr(args, "target", None)
    if (data is None) != (target is None):
        raise ConfigError("--data and --target go together: give both, or neither")
    if data is None:
        return []
    # JSON strings are valid YAML scalars, so any path or column name survives parsing.
    return [
        "dataset=csv",
        f"dataset_args={json.dumps({'path': data, 'target': target})}",
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Options via argparse; every other argument must be a ``key=value`` override, so
    overrides may stand before, between or after the options."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if (args.command in REPORT_COMMANDS or args.command in ("export", "config")) and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    misplaced = [item for item in rest if item.split("=")[0] in ("--data", "--target")]
    if misplaced:
        reads = (
            "give the data as dataset=csv dataset_args={path: FILE.csv, target: y}"
            if args.command == "sweep"
            else f"{args.command} reads the data that OUT/config.yaml names"
        )
        parser.error(
            f"{misplaced[0].split('=')[0]} applies to {' and '.join(DATA_COMMANDS)} only: {reads}"
        )
    bad = [item for item in rest if "=" not in item or item.startswith("-")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (overrides look like key=value)")
    args.overrides = rest
    return args


def run_report_command(args: argparse.Namespace) -> list[Path]:
    """Build the report of one run, or the comparison of several; the written files."""
    from ensemble_distill.report import build_report, compare_runs  # imports matplotlib

    if args.command == "report":
        return list(build_report(args.run_dir))
    return list(compare_runs(args.run_dirs, args.out))


def run_export_command(args: argparse.Namespace) -> str:
    """Export the student, check the file against PyTorch on random inputs; what to print."""
    from ensemble_distill.export import export_and_verify  # imports torch

    path, difference = export_and_verify(
        args.student_dir, args.format, args.out, trust_code=args.trust_code
    )
    check = "max difference from PyTorch on random inputs (relative above 1)"
    return f"{path}\n{check}: {difference:.3g}"


def run_pipeline_command(args: argparse.Namespace) -> None:
    """Run the command's pipeline steps; print a summary of the results after ``evaluate``.

    Launched by ``torchrun`` with several processes, every process joins its process group
    for the run (see docs/distributed.md); only rank 0 evaluates and prints.
    """
    from ensemble_distill.distributed import process_group  # heavy imports after parsing
    from ensemble_distill.pipeline import run

    config = resolve_config(args)
    steps = COMMANDS[args.command][0]
    device_type = "cuda" if str(config.device).startswith("cuda") else "cpu"
    with process_group(device_type):
        results = run(
            config,
            args.out,
            steps=steps,
            quiet=args.quiet,
            force=args.force,
            config_from=config_source(args),
        )
    if results is not None:
        from ensemble_distill.report.summary import print_summary  # imports matplotlib

        print_summary(results, args.out)


def main_rank_or_warning(record: logging.LogRecord) -> bool:
    """Console filter: progress notes from rank 0 only (``torchrun`` sets ``RANK``), so that
    several processes do not repeat them; warnings and errors from every rank."""
    return os.environ.get("RANK", "0") == "0" or record.levelno >= logging.WARNING


CONSOLE_ERRORS = "ensemble_distill.console"


def escape_or_backslash(error: UnicodeError) -> tuple[str | bytes, int]:
    """Console encoding errors: a file name's undecodable bytes (surrogate escapes) go out as
    the bytes they were, any other character the console cannot show as ``\\uXXXX``.

    Under a C locale without UTF-8 mode the console is ASCII: printing ``results.md`` (its
    arrows and dashes) or a non-ASCII path must not turn a finished run into a traceback.
    """
    try:
        return codecs.lookup_error("surrogateescape")(error)
    except UnicodeError:
        return codecs.lookup_error("backslashreplace")(error)


def tolerant_console() -> None:
    """Make stdout and stderr print every character (see :func:`escape_or_backslash`); a
    stream that cannot be reconfigured (a test's ``StringIO``) is left as it is."""
    codecs.register_error(CONSOLE_ERRORS, escape_or_backslash)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors=CONSOLE_ERRORS)


def fail(message: str) -> int:
    """Print ``message`` as the one error line a user (or a script) reads; exit status 2."""
    print(f"ensemble-distill: error: {' '.join(message.splitlines())}", file=sys.stderr)
    return 2


# The exit status of a command stopped by Ctrl-C (SIGINT): 128 + 2, as shells report it.
INTERRUPTED = 130


def interrupted(command: str) -> int:
    """Print the one line a Ctrl-C leaves; exit status :data:`INTERRUPTED`. Commands that
    train resume on a rerun (finished phases kept, the unfinished one from its last epoch)."""
    resumes = command in COMMANDS or command == "sweep"
    hint = "; rerun the same command to resume" if resumes else ""
    print(f"ensemble-distill: interrupted{hint}", file=sys.stderr)
    return INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    tolerant_console()
    args = parse_args(argv)
    console = logging.StreamHandler()  # progress notes on stderr; --quiet keeps warnings only
    console.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    console.addFilter(main_rank_or_warning)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[console])
    try:
        if args.command == "config":
            from ensemble_distill import config_listing  # imports torch: after parsing

            print(config_listing.config_listing())
        elif args.command in REPORT_COMMANDS:
            print("\n".join(str(path) for path in run_report_command(args)))
        elif args.command == "export":
            print(run_export_command(args))
        elif args.command == "sweep":
            print(run_sweep_command(args))
        else:
            run_pipeline_command(args)
    except EnsembleDistillError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (run.log says "stopped")
        return interrupted(args.command)
    except BrokenPipeError:  # the reader left (`ensemble-distill config | head`): not an error
        # Point stdout at /dev/null so that the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # unwritable or full output directory, unreadable input
        where = f" {exc.filename}" if exc.filename else ""
        return fail(
            f"cannot read or write{where}: {exc.strerror or exc}; "
            "check the path, its permissions and the free disk space"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
