"""Speed: the training step as it runs fastest where it runs (fast_step). On CUDA it is recorded as a graph and
replayed (cuda_graph.py). On the CPU it runs with few threads (choose_threads, --threads), and the groups of
nets of --seeds each train in a thread of their own, side by side (SpreadStep).

Why few threads. At batch 10 every operation is tiny (a 10 x 2880 by 2880 x 100 product). PyTorch splits each
one over every core by default and makes the cores wait for each other after each; on a quiet machine that
buys a little, and on a machine doing anything else (a browser, a second run, a test suite) a core that is
busy elsewhere holds all the others up: epochs 2.5-20x slower. One thread per net costs little when the
machine is quiet and nothing when it is busy. The test pass (batches of 500) keeps every core: there each
operation is big enough to share. The count never depends on timings, so the same command prints the same
numbers (the number of threads changes how some sums round).
"""
import copy
import itertools
import os
import queue
import threading
import weakref
from dataclasses import dataclass

import torch

from plumbing import cuda_graph

SMALL_BATCH = 32  # images per net: up to this, one thread per net trains faster on a busy machine
THREADS_AT_START = torch.get_num_threads()  # torch's own count, or OMP_NUM_THREADS's, before any script ran


@dataclass(frozen=True)
class Threads:
    """How a run uses the CPU's cores while it trains: `groups` groups of nets side by side (--seeds; 1 for
    one net), each in a thread of its own with `per_group` threads for each operation. `why`: who chose
    per_group, when it is not the default."""
    per_group: int
    groups: int = 1
    nets: int = 1
    why: str = ''

    def __str__(self):
        each = 'net' if self.groups == self.nets else 'group of nets'
        said = f'{self.per_group} thread{"s" if self.per_group > 1 else ""} per {each}'
        if self.nets > 1:
            said += (f', {self.nets} nets side by side' if each == 'net'
                     else f' ({" + ".join(map(str, group_sizes(self.nets, self.groups)))} nets)')
        return said + (f' ({self.why})' if self.why else '')


def choose_threads(flag, batch_size, device, nets=1, groups=None):
    """The Threads of a run. On the CPU: --threads N (flag) wins, then a count chosen before the script ran
    (OMP_NUM_THREADS, MKL_NUM_THREADS, torch.set_num_threads); otherwise one thread per net at batches of up to
    SMALL_BATCH images, and every core at larger ones. Several nets are split into as many groups as torch has
    threads (at most one per net), unless `groups` is given (a --resume run keeps its own). Elsewhere the
    nets train as one group, and torch keeps its own count."""
    cores = torch.get_num_threads()
    if device.type != 'cpu':
        return Threads(cores, groups or 1, nets)
    groups = groups or min(nets, cores)
    share = max(cores // groups, 1)  # each group's share of the cores
    variable = next((name for name in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS') if os.environ.get(name)), None)
    if flag:
        return Threads(flag, groups, nets, f'--threads {flag}')
    if variable:
        return Threads(share, groups, nets, f'{variable}={os.environ[variable]}')
    if cores != THREADS_AT_START:
        return Threads(share, groups, nets, f'torch.set_num_threads({cores})')
    if batch_size <= SMALL_BATCH:
        return Threads(1, groups, nets)
    return Threads(share, groups, nets, f'batches above {SMALL_BATCH} images')


def device_line(args):
    """What the script's first line says after 'Device: ': the device, and on the CPU how it trains there."""
    return f'{args.device}, {args.threads}' if args.device.type == 'cpu' else str(args.device)


def group_sizes(nets, groups):
    """How many nets each group holds: as even as can be, the first groups the larger (5, 2 -> [3, 2])."""
    return [nets // groups + (i < nets % groups) for i in range(groups)]


def spans(sizes):
    """(first, end) of each group of nets, from their sizes ([3, 2] -> [(0, 3), (3, 5)])."""
    ends = list(itertools.accumulate(sizes))
    return list(zip([0] + ends[:-1], ends))


def fast_step(sgd_step, model, loss_fn, optimizer, threads=None):
    """step(images, labels) -> loss: sgd_step(model, loss_fn, optimizer, images, labels), made fast where it runs:
    on CUDA recorded as a graph (cuda_graph.py); on the CPU with `threads` (a Threads), and several groups of
    nets (stacked.NetGroups) each in a thread of its own; elsewhere as it is."""
    if threads is None or next(model.parameters()).device.type != 'cpu':  # (CUDA: one group, see seeded)
        return cuda_graph.graphed_on_cuda(sgd_step, model, loss_fn, optimizer)
    if hasattr(model, 'groups'):
        return SpreadStep(sgd_step, model, loss_fn, optimizer, threads.per_group)
    return StepWithThreads(sgd_step, model, loss_fn, optimizer, threads.per_group)


class StepWithThreads:
    """The step with `threads` threads for each of its operations. The count stays so until the training pass
    ends, when common.Batches puts torch's own count back for the test pass: were it put back after every step,
    the batch's preparation would wake torch's other threads, and they would spin on the spare cores until the
    next step (twice the CPU time, and a machine doing other work would feel it). (Setting the count takes a
    tenth of a microsecond.)"""

    def __init__(self, sgd_step, model, loss_fn, optimizer, threads):
        self.sgd_step, self.model, self.loss_fn, self.optimizer, self.threads = (sgd_step, model, loss_fn,
                                                                                  optimizer, threads)

    def __call__(self, images, labels):
        torch.set_num_threads(self.threads)
        return self.sgd_step(self.model, self.loss_fn, self.optimizer, images, labels)


class SpreadStep:
    """One step of every group of nets (stacked.NetGroups), each group in a thread of its own: the first in the
    calling thread, the others in worker threads that live as long as this step. Each group takes the script's
    own sgd_step with its slice of the batch, its own loss (loss_of) and its own part of the optimizer
    (optimizer_part); the step returns the nets' mean loss, as one stack of all the nets would.

    The groups share nothing but the batch they read, so the numbers do not depend on which thread runs first.
    PyTorch lets go of Python's lock (the GIL) inside its operations, so the threads run at the same time."""

    def __init__(self, sgd_step, model, loss_fn, optimizer, threads):
        self.sgd_step, self.optimizer, self.threads = sgd_step, optimizer, threads
        self.groups, self.spans = list(model.groups), model.spans
        self.sizes = [b - a for a, b in self.spans]  # nets in each group
        self.losses = [loss_of(loss_fn, group) for group in self.groups]
        self.parts = [optimizer_part(optimizer, group.parameters()) for group in self.groups]
        self.workers = [Worker(threads) for _ in self.groups[1:]]
        weakref.finalize(self, Worker.stop_all, self.workers)  # the threads end with the step

    def __call__(self, images, labels):
        for part in self.parts:  # the optimizer's settings as they are now (a learning-rate schedule changes them)
            part.follow(self.optimizer)
        jobs = [(group, loss, part, images[:, a:b], labels[:, a:b])
                for group, loss, part, (a, b) in zip(self.groups, self.losses, self.parts, self.spans)]
        for worker, job in zip(self.workers, jobs[1:]):
            worker.start(self.sgd_step, job)
        torch.set_num_threads(self.threads)  # until the pass ends, as StepWithThreads says
        try:
            first = self.sgd_step(*jobs[0])
        finally:  # every group's step ends before this one does, whatever happened: nothing is left half-done
            others = [worker.result() for worker in self.workers]
        return sum(loss * n for loss, n in zip([first, *others], self.sizes)) / sum(self.sizes)


class Worker:
    """A thread that runs steps given to it, one at a time, with `threads` threads for each operation."""

    def __init__(self, threads):
        self.jobs, self.results = queue.SimpleQueue(), queue.SimpleQueue()
        self.thread = threading.Thread(target=self.run, args=(threads, self.jobs, self.results), daemon=True,
                                       name='group of nets')
        self.thread.start()

    @staticmethod
    def run(threads, jobs, results):  # (no reference to the Worker: it can go away while this runs)
        torch.set_num_threads(threads)
        for step, job in iter(jobs.get, None):
            try:
                results.put((step(*job), None))
            except BaseException as e:  # noqa: BLE001 -- handed to the thread that waits for it
                results.put((None, e))

    def start(self, step, job):
        self.jobs.put((step, job))

    def result(self):
        """The step's loss, once it has ended (a stop signal meanwhile waits for it); its error, raised here."""
        interrupted = None
        while True:
            try:
                loss, error = self.results.get()
                break
            except KeyboardInterrupt as e:  # the step in the other thread must end before anything is saved
                interrupted = e
        if error is not None:
            raise error
        if interrupted is not None:
            raise interrupted
        return loss

    @staticmethod
    def stop_all(workers):
        """End the threads, and wait for them: one still inside torch when Python exits would abort it."""
        for worker in workers:
            worker.jobs.put(None)
        for worker in workers:
            worker.thread.join(timeout=60)


def loss_of(loss_fn, nets):
    """The loss for one group of the nets. A loss that reads the nets' weights itself (book.cost's L2 term) is
    remade for the group's weights alone; any other is used as it is."""
    remake = getattr(loss_fn, 'for_nets', None)
    return remake(nets) if remake else loss_fn


def optimizer_part(optimizer, parameters):
    """The optimizer over some of its parameters: the same kind, the same settings, and the same state (each
    parameter's momentum, say), so that saving the optimizer saves what every part learned. follow(optimizer)
    takes on the optimizer's settings as they are now."""
    mine = {id(p) for p in parameters}
    part = copy.copy(optimizer)  # shares its state; hooks are not copied
    part.param_groups = [{**group, 'params': [p for p in group['params'] if id(p) in mine]}
                         for group in optimizer.param_groups]

    def follow(whole):
        part.state = whole.state  # (load_state_dict, as --resume calls it, puts in a new one)
        for own, group in zip(part.param_groups, whole.param_groups):
            own.update((key, value) for key, value in group.items() if key != 'params')
    part.follow = follow
    return part
