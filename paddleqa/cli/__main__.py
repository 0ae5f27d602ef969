"""``python -m paddleqa.cli ...``: the same as the ``paddleqa`` console script."""
import sys

from . import main

sys.exit(main())
