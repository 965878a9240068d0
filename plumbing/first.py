"""Imported first by each script, before torch, which takes seconds to load: Ctrl-C meanwhile is the one line
`interrupted` and exit status 130, as it is later (stops.run_as_command), not a traceback from inside torch."""
import sys


def one_line_for_ctrl_c(kind, error, traceback):
    """sys.excepthook: an interrupt that nothing caught is one line; anything else, Python's own report."""
    if issubclass(kind, KeyboardInterrupt):
        print('interrupted', file=sys.stderr)  # (Python then exits as Ctrl-C stops a process: status 130)
        return
    sys.__excepthook__(kind, error, traceback)


sys.excepthook = one_line_for_ctrl_c
