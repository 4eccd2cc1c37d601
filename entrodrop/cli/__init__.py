"""`entrodrop`: the command-line interface.

    entrodrop analyze     profile every block's entropy       (entrodrop.cli.analyze)
    entrodrop prune-list  the prune order and the first K     (entrodrop.cli.blocks)
    entrodrop evaluate    quality and speed, curves over K    (entrodrop.cli.blocks)
    entrodrop export      the block-pruned checkpoint         (entrodrop.cli.blocks)
    entrodrop width       the width-pruned checkpoint         (entrodrop.cli.width)

Every command goes through `entrodrop.service`. User errors print one line on stderr and
exit with code 2, anything else one line naming a log file and exit code 1; nothing prints
a traceback (`entrodrop.cli.common.run_command`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

# Read once, when torch, transformers and tqdm are imported; so they are set before the
# command modules are (in main), and never override what the user set.
LIBRARY_ENVIRONMENT = {
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    # transformers' GGUF conversion draws a raw tqdm bar; tqdm reads this when imported.
    "TQDM_DISABLE": "1",
}


def build_parser() -> argparse.ArgumentParser:
    from entrodrop.cli import analyze, blocks, width  # after LIBRARY_ENVIRONMENT: see main

    parser = argparse.ArgumentParser(
        prog="entrodrop",
        description="Entropy-based pruning of causal language models (EntroDrop Studio).",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (analyze, blocks, width):
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for name, value in LIBRARY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    # The libraries are imported from here on (not at import of this package): see above.
    from entrodrop.cli.common import quiet_libraries, run_command

    quiet_libraries()
    argv = list(argv) if argv is not None else None
    a = build_parser().parse_args(argv)
    a.quiet = getattr(a, "quiet", False)
    return run_command(a, argv if argv is not None else sys.argv[1:])


__all__ = ["build_parser", "main"]
