"""Command line: parse arguments and hand over to :mod:`ensemble_distill.pipeline`."""

from __future__ import annotations

import argparse
import codecs
import json
import logging
import os
import sys
from collections.abc import Sequence
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
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            usage=f"ensemble-distill {name} [--config FILE] [--data FILE.csv --target COLUMN] "
            "--out DIR [--quiet] [--force] [key=value ...]",
            epilog="key=value: config overrides anywhere on the line, nested keys with dots "
            "(kd.temperature=2)",
        )
        sub.add_argument(
            "--config",
            type=Path,
            help="YAML config file (default: built-in "
            "defaults, or OUT/config.yaml for distill/evaluate)",
        )
        sub.add_argument(
            "--data",
            metavar="FILE.csv",
            help="your own numeric table (header row) as a regression dataset; with --target",
        )
        sub.add_argument("--target", metavar="COLUMN", help="the --data column to predict")
        sub.add_argument("--out", type=Path, required=True, help="output directory")
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
        sub.add_argument(
            "--force",
            action="store_true",
            help="retrain every requested step (default: resume a run in OUT, keeping what "
            "finished with the same settings)",
        )
    add_report_commands(commands)
    add_export_command(commands)
    return parser


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
        help="onnx (needs: pip install 'ensemble-distill[export]') or torchscript",
    )
    export.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="the file to write (default: STUDENT_DIR/student.onnx or student.pt); its "
        "metadata also goes to FILE.json",
    )


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """The config file (see :func:`config_source`), then ``--data`` and ``key=value``
    overrides."""
    from ensemble_distill.config import load_config  # imports torch: after parsing

    return load_config(config_source(args), data_overrides(args) + args.overrides)


def config_source(args: argparse.Namespace) -> Path | None:
    """--config FILE, else OUT/config.yaml for steps after the first, else None (defaults)."""
    saved = args.out / "config.yaml"
    if args.config is None and args.command in ("distill", "evaluate") and saved.is_file():
        return saved
    return args.config


def data_overrides(args: argparse.Namespace) -> list[str]:
    """``--data FILE.csv --target COLUMN`` as the overrides they stand for."""
    if (args.data is None) != (args.target is None):
        raise ConfigError("--data and --target go together: give both, or neither")
    if args.data is None:
        return []
    # JSON strings are valid YAML scalars, so any path or column name survives parsing.
    return [
        "dataset=csv",
        f"dataset_args={json.dumps({'path': args.data, 'target': args.target})}",
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Options via argparse; every other argument must be a ``key=value`` override, so
    overrides may stand before, between or after the options."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if (args.command in REPORT_COMMANDS or args.command == "export") and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
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

    path, difference = export_and_verify(args.student_dir, args.format, args.out)
    check = "max difference from PyTorch on random inputs (relative above 1)"
    return f"{path}\n{check}: {difference:.3g}"


def run_pipeline_command(args: argparse.Namespace) -> None:
    """Run the command's pipeline steps; print the results table after ``evaluate``.

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
        print((args.out / "results.md").read_text(encoding="utf-8"))


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


def main(argv: Sequence[str] | None = None) -> int:
    tolerant_console()
    args = parse_args(argv)
    console = logging.StreamHandler()  # progress notes on stderr; --quiet keeps warnings only
    console.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    console.addFilter(main_rank_or_warning)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[console])
    try:
        if args.command in REPORT_COMMANDS:
            print("\n".join(str(path) for path in run_report_command(args)))
        elif args.command == "export":
            print(run_export_command(args))
        else:
            run_pipeline_command(args)
    except EnsembleDistillError as exc:
        return fail(str(exc))
    except OSError as exc:  # unwritable or full output directory, unreadable input
        where = f" {exc.filename}" if exc.filename else ""
        return fail(
            f"cannot read or write{where}: {exc.strerror or exc}; "
            "check the path, its permissions and the free disk space"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
