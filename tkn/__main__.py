"""python -m tkn: the command line (tkn/cli.py). `python -m tkn --help` lists the verbs."""
import sys

from tkn.cli import main

if __name__ == "__main__":
    sys.exit(main())
