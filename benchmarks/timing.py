"""Timing a few contenders against each other on a noisy machine, and the command line of a
micro-benchmark that writes one results page."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from seeds import write_page

QUICK_ROUNDS = 2


def fastest_ms(contenders: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Milliseconds of each contender's call: one warm-up call each, then ``rounds`` rounds
    that call every contender in turn (so slow drifts of the machine hit all alike), the
    fastest call of each kept."""
    best = dict.fromkeys(contenders, float("inf"))
    for call in contenders.values():
        call()
    for _ in range(rounds):
        for name, call in contenders.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: 1e3 * seconds for name, seconds in best.items()}


def micro_main(
    description: str,
    doc: Path,
    run: Callable[[bool, int], dict],
    markdown: Callable[[dict], str],
) -> None:
    """Parse ``--doc`` (default ``doc``), ``--rounds`` and ``--quick`` (a tiny workload and
    :data:`QUICK_ROUNDS` rounds, for the tests), then write ``run(quick, rounds)``'s record
    and its page."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--doc", type=Path, default=doc)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a tiny workload, for the tests")
    args = parser.parse_args()
    rounds = QUICK_ROUNDS if args.quick else args.rounds
    write_page(args.doc, run(args.quick, rounds), markdown)
