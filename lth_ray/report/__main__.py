from lth_ray.report.build import main

raise SystemExit(main())
