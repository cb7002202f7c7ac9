import sys

from mfmodal.local.cli import main

sys.exit(main())
