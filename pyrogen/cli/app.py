"""``main``: parses the command line, dispatches to a command, turns errors into exit statuses."""

from __future__ import annotations

import argparse
import sys

from pyrogen import distributed
from pyrogen.cli.evaluation import cmd_compare, cmd_evaluate, cmd_report
from pyrogen.cli.failures import user_message
from pyrogen.cli.parser import _apply_config, _parser, check_common_options
from pyrogen.cli.sampling import cmd_sample
from pyrogen.cli.training import cmd_run, cmd_train
from pyrogen.errors import PyrogenError

__all__ = ["COMMANDS", "main", "run_model_file"]

COMMANDS = {
    "train": cmd_train,
    "run": cmd_run,
    "evaluate": cmd_evaluate,
    "compare": cmd_compare,
    "sample": cmd_sample,
}


COMMANDS["report"] = cmd_report


def run_model_file(
    path: str, class_name: str, args: list[str] | None = None, defaults: tuple[str, ...] = ()
) -> int:
    """``pyrogen run PATH:CLASS`` with a model file's ``defaults`` before the user's ``args``.

    The ``main`` of every zoo file: ``python models/vae.py --data digits --epochs 5`` takes the
    options of ``pyrogen run`` (later options win, so the user's override the defaults).
    """
    argv = list(sys.argv[1:] if args is None else args)
    return main(["run", f"{path}:{class_name}", *defaults, *argv])


def _local_runs(args: argparse.Namespace) -> None:
    """``pretrained:NAME`` as a run: its copy in runs/ (the shipped files stay as they are)."""
    from pyrogen.pretrained import PREFIX, local_copy

    if args.command == "train":
        return
    if isinstance(getattr(args, "run", None), str) and args.run.startswith(PREFIX):
        args.run = str(local_copy(args.run))
    if isinstance(getattr(args, "runs", None), list):
        args.runs = [str(local_copy(r)) if str(r).startswith(PREFIX) else r for r in args.runs]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pyrogen`` command; returns the exit status."""
    from pyrogen.train import Interrupted, TrainingError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if (getattr(args, "nproc", None) or 1) > 1 and not distributed.launched():
        return distributed.launch(args.nproc, distributed.strip_option(argv, "--nproc"))
    cleanup = distributed.setup_from_env()  # under torchrun: join the group; rank 0 prints
    succeeded = False
    try:
        if getattr(args, "config", None):
            args = _apply_config(args, parser, argv)
        check_common_options(args)
        _local_runs(args)
        result = COMMANDS[args.command](args)
        if args.command == "train":
            print(f"run directory: {result}")
        succeeded = True
        return 0
    except Interrupted as e:
        print(f"pyrogen {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"pyrogen {args.command}: interrupted", file=sys.stderr)
        return 130
    except (PyrogenError, TrainingError) as e:
        if args.debug:
            raise
        print(f"pyrogen {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # OSError, MemoryError, a malformed run file, ... or a bug
        if args.debug:
            raise
        message = user_message(e)
        if message is not None:
            print(f"pyrogen {args.command}: error: {message}", file=sys.stderr)
            return 2
        print(
            f"pyrogen {args.command}: internal error: {type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}\n"
            "please report it with the output of the same command run with --debug",
            file=sys.stderr,
        )
        return 1
    finally:
        cleanup(succeeded)
