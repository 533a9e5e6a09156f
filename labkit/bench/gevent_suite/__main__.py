"""``python -m labkit.bench.gevent_suite``: see the package docstring."""
import sys

from labkit.bench.gevent_suite import main

sys.exit(main())
