"""The fssession benchmarks (``scripts/bench``): every figure a ratio against a baseline measured in the same run.

One command per benchmark, each with ``--quick`` (a smoke run) and a results JSON:

- :mod:`.contend`: one session, P processes incrementing it (``scripts/bench``); contenders in
  :mod:`.incrementers`;
- :mod:`.store`: the store's operations, syscalls, sealing and event hook (``scripts/bench store``);
  contenders in :mod:`.stores`, workloads traced by :mod:`.cycles`, ``--more`` in :mod:`.storemore`;
- :mod:`.reap`: the reaper against find and Django (``scripts/bench reap``); contenders in :mod:`.reapers`;
- :mod:`.e2e`: the 3-node demo cluster under N clients (``scripts/bench e2e``); backends in
  :mod:`.e2e_apps`, nodes in :mod:`.e2e_cluster` and :mod:`.e2e_node`, clients in :mod:`.e2e_load`;
- :mod:`.lock`: the lock alone (``scripts/bench lock``); contenders in :mod:`.locks`;
- :mod:`.events`: what the ``on_event`` hook costs a load and an edit (``scripts/bench events``);
- :mod:`.plot` and :mod:`.docs`: the e2e plot and docs/benchmarks.md from the results (``scripts/bench docs``);
- :mod:`.common`: what they share: syscall counts with strace, rates, percentiles, scratch
  directories, worker processes, the machine's description, results files, tables.

A new contender (a lock, a store, a way to purge, a web backend) is one
registered function or class in its benchmark's contenders module; the
benchmark and its tables pick it up from there.
"""
