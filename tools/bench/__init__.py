"""The fssession benchmarks (``scripts/bench``): every figure a ratio against a baseline measured in the same run.

- :mod:`.lock`: the lock (``python -m tools.bench.lock``); its contenders in :mod:`.locks`;
- :mod:`.store`: the store (``python -m tools.bench.store``); its contenders in :mod:`.stores`;
- :mod:`.reap`: the reaper (``python -m tools.bench.reap``); its contenders in :mod:`.reapers`;
- :mod:`.events`: what the ``on_event`` hook costs a load and an edit (``python -m tools.bench.events``);
- :mod:`.common`: what they share: syscall counts with strace, rates, scratch directories,
  worker processes, tables;
- :mod:`.cycles`: the workloads the syscall counts trace, each in a process of its own.

A new contender (a lock, a store, a way to purge) is one registered
function or class in :mod:`.locks`, :mod:`.stores` or :mod:`.reapers`;
the benchmarks and their tables pick it up from there.
"""
