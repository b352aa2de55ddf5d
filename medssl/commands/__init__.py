"""The sub-commands of ``medssl``: each a module with ``HELP``, ``add_arguments(parser)`` and ``run(args)``.

They are registered in one place, :data:`medssl.cli.COMMANDS`. A command module stays light at import time (the
parser imports every one of them): what it runs is imported inside ``run``.
"""
