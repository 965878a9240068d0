"""Plumbing: everything a flag switches on, kept out of the way of the scripts you read to learn. You need not
open these modules to follow a run; each says in its docstring what it holds.

    modes        how --seeds, --book, --load-model, --predict and --resume change each step of a script's main(),
                 and the epochs its train() walks (--resume, resume points, the save on a stop)
    flags        the shared flags: defined, checked, filled from the net's recipe (make_parser, parse_args)
    saving       --save-model, and with it what --resume needs to go on exactly
    loading      a saved file read back for --load-model and --resume, checked before any work
    stops        errors and stops: one line and an exit status, never a traceback (run_as_command), and the
                 few words an error is told in
    pictures     --plot
    speed        the training step made fast where it runs: the CPU's threads (--threads), --seeds' groups of
                 nets side by side in threads of their own, and on CUDA the graph of cuda_graph
    cuda_graph   speed on CUDA: the training step recorded once and replayed
    stacked      --seeds: several nets trained at once, and their vote
    own_images   --predict: your own images, prepared as the dataset's were
    first        imported before torch: Ctrl-C while torch loads is one line, not a traceback
"""
