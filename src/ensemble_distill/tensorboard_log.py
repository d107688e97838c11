"""TensorBoard event files of a run's training phases (``tensorboard=true``; optional extra).

Each phase — the teacher, each student — writes one TensorBoard run, ``OUT/tb/<phase>``:
``loss/train`` per optimisation step, ``lr`` and the validation metrics (``val/acc``,
``val/nll``; ``val/rmse`` for regression) per epoch, each epoch's at its last step, so that
every curve shares one step axis. A phase of several ``fit`` calls (Hydra's two phases, teacher
members trained one after another) continues one step count through them.

A resumed phase purges what the interrupted run logged after its last saved epoch, so that
every step appears once (``SummaryWriter(purge_step=...)``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ensemble_distill import distributed
from ensemble_distill.errors import ConfigError
from ensemble_distill.training import FitReporter, reporting

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

TB_DIR = "tb"
MISSING = "tensorboard=true needs the tensorboard package: pip install tensorboard"


def check_installed() -> None:
    """Raise a ConfigError unless torch's TensorBoard writer imports: checked with the config,
    before any file is written, rather than once training has begun."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ConfigError(MISSING) from None


class TensorBoardLog(FitReporter):
    """The events of one phase's ``fit`` calls, in the TensorBoard run ``directory``.

    The writer is opened at the first event, so that a phase that only resumes finished
    ``fit`` calls opens none; its ``purge_step`` is that event's step.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._writer: SummaryWriter | None = None
        self._offset = 0  # phase steps of the earlier fit calls
        self._end = 0  # phase steps once the current fit call ends

    def begin(self, total_steps: int) -> None:
        self._offset, self._end = self._end, self._end + total_steps

    def step(self, step: int, loss: float) -> None:
        self._scalar("loss/train", loss, step)

    def epoch(self, step: int, lr: float, metrics: dict[str, float]) -> None:
        self._scalar("lr", lr, step)
        for key, value in metrics.items():
            self._scalar(key.replace("_", "/", 1), value, step)
        self._writer.flush()  # a live `tensorboard --logdir` sees every finished epoch

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def _scalar(self, tag: str, value: float, step: int) -> None:
        step += self._offset
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.directory), purge_step=step)
        self._writer.add_scalar(tag, value, step)


@contextlib.contextmanager
def phase_log(enabled: bool, out: Path, phase: str) -> Iterator[None]:
    """When ``enabled`` (``tensorboard=true``), log every ``fit`` in the block to
    ``out/tb/<phase>`` (see the module docstring); on rank 0 alone, which writes OUT. The
    writer is closed (flushed) when the block ends, however it ends."""
    if not (enabled and distributed.is_main()):
        yield
        return
    log = TensorBoardLog(out / TB_DIR / phase)
    try:
        with reporting(log):
            yield
    finally:
        log.close()
