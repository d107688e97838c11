import sys

from ensemble_distill.cli import main

sys.exit(main())
