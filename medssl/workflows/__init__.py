"""What bundles and tools build from the library: evaluators, the standard handler lists, bundle workflows, and the
training API (:mod:`medssl.workflows.runs`) that the demo and the benchmarks share."""
