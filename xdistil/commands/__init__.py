"""The commands of ``xdistil``, one small module per group; `xdistil.cli` assembles them.

    _util    the parser class, path checks, one-line errors (what every command shares)
    flags    config flags generated from the config dataclasses, and the config of a command
    info     languages, data check, config show
    train    teacher prepare / train, label, distill, run
    deploy   evaluate, export, predict, serve
    reports  bench, report

A command is a thin function: it checks its paths, calls a library function (the same one
the tests call) and prints what it returns.
"""
