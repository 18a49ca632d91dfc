import sys

from bench import cli

sys.exit(cli.main())
