"""The ``pyrogen`` command: train, evaluate, compare, sample, report, and run (all of them).

Errors in the user's input print one or two lines and exit with status 2; ``--debug`` shows the
traceback. An interrupted training run exits 130 (SIGINT) or 143 (SIGTERM) after a checkpoint.

Layout: :mod:`~pyrogen.cli.parser` (the arguments, --config files, option checks),
:mod:`~pyrogen.cli.training` (train, run), :mod:`~pyrogen.cli.evaluation` (evaluate, compare,
report), :mod:`~pyrogen.cli.sampling` (sample) and :mod:`~pyrogen.cli.app` (``main``).
"""

# `main` and `run_model_file`, and (`name as name`) the commands and helpers as before the split
from pyrogen.cli.app import COMMANDS as COMMANDS
from pyrogen.cli.app import main, run_model_file
from pyrogen.cli.evaluation import cmd_compare as cmd_compare
from pyrogen.cli.evaluation import cmd_evaluate as cmd_evaluate
from pyrogen.cli.evaluation import cmd_report as cmd_report
from pyrogen.cli.evaluation import format_summary as format_summary
from pyrogen.cli.evaluation import markdown_table as markdown_table
from pyrogen.cli.parser import DEFAULT_EPOCHS as DEFAULT_EPOCHS
from pyrogen.cli.parser import TRAIN_KEYS as TRAIN_KEYS
from pyrogen.cli.parser import _apply_config as _apply_config
from pyrogen.cli.parser import _parser as _parser
from pyrogen.cli.sampling import cmd_sample as cmd_sample
from pyrogen.cli.sampling import save_image_grid as save_image_grid
from pyrogen.cli.training import cmd_run as cmd_run
from pyrogen.cli.training import cmd_train as cmd_train

__all__ = ["main", "run_model_file"]
