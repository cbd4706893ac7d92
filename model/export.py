"""`python -m model.export`: the README's spelling of the export command (model/checkpoint/export.py)."""
import sys

from model.checkpoint.export import main

if __name__ == "__main__":
    sys.exit(main())
