"""``python -m seqformer``: the CLI, also as torchrun runs it (``torchrun -m seqformer train``)."""

import sys

from seqformer.cli import main

sys.exit(main())
