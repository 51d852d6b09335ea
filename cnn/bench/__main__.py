"""``python -m cnn.bench``."""
import sys

from cnn.bench.cli import main

sys.exit(main())
