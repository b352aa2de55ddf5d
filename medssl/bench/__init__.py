"""medssl's benchmarks, one idea a module.

- what they train with, from the library: :mod:`~medssl.workflows.runs` (one run of a bundle's method, the training
  API the demo uses too), :mod:`~medssl.workflows.tasks` (tasks, run names through the method registry) and
  :mod:`~medssl.workflows.sizes` (the networks and patch sizes the demo and the benchmarks train and time);
- the accuracy benchmark: :mod:`~medssl.bench.accuracy` (chains of runs and their scheduling),
  :mod:`~medssl.bench.presets`, :mod:`~medssl.bench.robustness`, :mod:`~medssl.bench.results` (result files) and
  :mod:`~medssl.bench.accuracy_report`; its real-data tracks: :mod:`~medssl.bench.track`, :mod:`~medssl.bench.tracks`
  and :mod:`~medssl.bench.track_report`;
- the speed benchmark: :mod:`~medssl.bench.speed` (phases, each in its own process), :mod:`~medssl.bench.speed_train`,
  :mod:`~medssl.bench.speed_infer`, :mod:`~medssl.bench.speed_report` and :mod:`~medssl.bench.measure` (timers,
  memory, FLOPs, the machine).

The command line is :mod:`medssl.commands.bench` (``medssl bench accuracy|speed``).
"""
