import sys

from encodecmae.cli import main

sys.exit(main())
