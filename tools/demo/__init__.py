"""The fssession cluster demo (``scripts/demo``, i.e. ``python -m tools.demo``), one job per module.

- :mod:`.config`: the demo store's settings and the names both sides share;
- :mod:`.app`: the web application a node serves (a page and a JSON API);
- :mod:`.node`: one node's process (``python -m tools.demo.node``);
- :mod:`.cluster`: starting, stopping and killing nodes, as simulated hosts where possible;
- :mod:`.client`: an HTTP client with a cookie jar, and round-robin traffic over the nodes;
- :mod:`.story`: the story the demo tells, step by step, checking what each step shows;
- :mod:`.cli`: the command line.
"""
