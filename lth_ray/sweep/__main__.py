import sys

from lth_ray.sweep.cli import main

sys.exit(main())
