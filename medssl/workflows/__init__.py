"""What bundles and tools build from the library: evaluators, the standard handler lists, bundle workflows."""
