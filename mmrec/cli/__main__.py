import sys

from mmrec.cli import main

sys.exit(main())
