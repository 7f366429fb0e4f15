import sys

from interir_plugin.cli import main

sys.exit(main(['train', *sys.argv[1:]]))
