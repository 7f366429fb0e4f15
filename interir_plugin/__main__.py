import sys

from interir_plugin.cli import main

sys.exit(main())
