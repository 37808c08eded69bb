"""What runs before any data is read: the command line's one-line errors and console (command_line.py), every
module's rules run over the composed config (validate.py), the resolvers conf/ interpolates (resolvers.py), and what
resume=<run folder> may change of the run (resume_changes.py).
Nothing is imported here: command_line.py must stay importable without torch, validate.py imports every builder."""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"
