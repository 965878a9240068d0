"""The flags every training script shares: make_parser defines them, parse_args reads them, fills what the user
left out from the net's recipe, reads a --load-model file, adopts a --resume run's flags, and picks the device.
Each bad value is a usage error naming its flag, before any work starts."""
import argparse
import math
import os
import shutil
import stat
import sys
import tempfile

import numpy as np

import common
from plumbing import speed


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {text}')
    return value


def positive_float(text):
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f'must be a finite number above 0, got {text}')
    return value


def non_negative_float(text):
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f'must be a finite number of at least 0, got {text}')
    return value


def seed_number(text):
    value = int(text)
    if not -2 ** 63 <= value < 2 ** 64:
        raise argparse.ArgumentTypeError(f'must be from {-2 ** 63} to {2 ** 64 - 1} (what torch accepts), got {text}')
    return value


def non_regular(path):
    """'a character device', 'a block device', 'a FIFO (named pipe)' or 'a socket' when that is what `path`
    is (after symbolic links); None for a regular file, a folder, or nothing."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    for test, kind in ((stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device'),
                       (stat.S_ISFIFO, 'a FIFO (named pipe)'), (stat.S_ISSOCK, 'a socket')):
        if test(mode):
            return kind
    return None


def output_path(text):
    """A file that can be written: not a folder, nor a device, FIFO or socket (saving.atomic_write would not
    replace it), in a folder that exists and takes a new file (tried)."""
    kind = non_regular(text)
    if kind:
        raise argparse.ArgumentTypeError(f'{text} is {kind}, not a regular file; give a file path')
    if text.endswith(('/', os.sep)) or os.path.isdir(text):
        raise argparse.ArgumentTypeError(f'{text} is a folder; give a file name in it')
    folder = os.path.dirname(os.path.realpath(text))  # (a symbolic link: where the file it names will be)
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f'folder {folder} does not exist')
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise argparse.ArgumentTypeError(f'cannot write in folder {folder} ({e.strerror})') from None
    return text


def picture_formats():
    """The file formats matplotlib can write here."""
    import matplotlib
    matplotlib.use('Agg')  # no display needed
    from matplotlib.figure import Figure
    return Figure().canvas.get_supported_filetypes()


def picture_path(text):
    """An output_path whose extension names a format matplotlib writes (.png, .pdf, .svg, .jpg, ...)."""
    output_path(text)
    extension = os.path.splitext(text)[1].lower().lstrip('.')
    formats = picture_formats()
    if extension not in formats:
        raise argparse.ArgumentTypeError(f'{text}: the extension must name a picture format: .'
                                         + ', .'.join(sorted(formats)))
    if extension == 'pgf':  # matplotlib writes it through LaTeX
        import matplotlib
        tex = matplotlib.rcParams['pgf.texsystem']
        if not shutil.which(tex):
            raise argparse.ArgumentTypeError(f'{text}: matplotlib writes .pgf through {tex}, which is not installed '
                                             f'here; use .pdf, .svg or .png')
    return text


def name_max(folder):
    """The longest file name, in bytes, that `folder` takes (255 where the system does not say)."""
    try:
        return os.pathconf(folder or '.', 'PC_NAME_MAX')
    except (OSError, ValueError):
        return 255


def cut(name, most):
    """`name` cut to at most `most` bytes, a whole character at a time."""
    return name.encode()[:most].decode(errors='ignore')


def beside(path, word):
    """m.pt -> m.interrupted.pt: a file a run may write beside another; the stem is cut short to fit the folder,
    so that any name that fits has its neighbours."""
    folder, name = os.path.split(path)
    stem, extension = os.path.splitext(name)
    extension = cut(extension, 20)
    room = name_max(os.path.dirname(os.path.realpath(path))) - len(f'.{word}{extension}'.encode())
    return os.path.join(folder, f'{cut(stem, max(room, 1))}.{word}{extension}')


def outputs(args):
    """Every file this run may write: (flag, path, what is written there), the model first."""
    files = []
    if args.save_model and not args.load_model:
        flag = '--resume' if args.save_model == args.resume else '--save-model'  # (--resume saves back to its file)
        files += [(flag, args.save_model, 'the model'),
                  (flag, beside(args.save_model, 'interrupted'), 'the model (where a stop in its first epoch puts it)')]
    if args.plot:
        files.append(('--plot', args.plot, 'the picture'))
        if args.predict and not args.load_model:
            files.append(('--plot', beside(args.plot, 'predictions'), '--predict\'s picture (beside the plot)'))
    return files


def inputs(args):
    """The files this run reads and must not replace: (flag, path)."""
    read = [('--predict', path) for path in args.predict or []] + [('--load-model', args.load_model)]
    return [(flag, path) for flag, path in read + [('--resume', args.resume)] if path]


def same_file(a, b):
    """Are paths a and b one file (after links; and, where both exist, as the system sees them: a.PNG and a.png
    on a disk that ignores case)?"""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(parser, args):
    """Before any work: each file the run may write can be written (output_path), its name is not too long
    for its folder, no two are one file (one would replace the other), and none is a file the run reads."""
    seen = []
    for flag, path, what in outputs(args):
        try:
            output_path(path)
        except argparse.ArgumentTypeError as e:
            parser.error(f'argument {flag}: {what} goes to {path}, and {e}')
        name, longest = os.path.basename(path), name_max(os.path.dirname(os.path.realpath(path)))
        if len(name.encode()) > longest:
            parser.error(f'argument {flag}: the name of {what}, {name[:30]}...{name[-20:]}, is {len(name.encode())} '
                         f'bytes long, and that folder takes names of up to {longest}; give a shorter one')
        for other_flag, other_path, other in seen:
            if same_file(path, other_path):
                parser.error(f'argument {flag}: {path} is also the {other_flag} path; {what} would replace {other}')
        for input_flag, input_path in inputs(args):
            if same_file(path, input_path) and not (input_flag == '--resume' and what == 'the model'):
                parser.error(f'argument {flag}: {path} is also a file given to {input_flag}; {what} would '
                             f'replace it')
        seen.append((flag, path, what))


# argparse names the type function in its message; these names read well there
positive_int.__name__ = 'integer'
positive_float.__name__ = 'number'
non_negative_float.__name__ = 'number'
seed_number.__name__ = 'integer'
output_path.__name__ = picture_path.__name__ = 'path'

TRAINING_FLAGS = ('epochs', 'lr', 'wd', 'lmbda', 'batch_size', 'extend_data', 'seed', 'seeds', 'threads',
                  'save_model')  # what --load-model, which trains nothing, refuses
RUN_FLAGS = ('net', 'dataset', 'batch_size', 'lr', 'wd', 'epochs', 'extend_data', 'limit', 'seed', 'seeds',
             'book', 'lmbda')  # what defines a run: a --resume file keeps them, and the run takes them on


def plain_number(value):
    """40, 0.1, 0.00005 (not 5e-05): as a recipe writes it."""
    return str(value) if isinstance(value, int) else np.format_float_positional(value, trim='0')


def recipe_default(key, recipes):
    """'(default: 0.1)', or '(default: 0.1 for simple, 0.03 for relu)' when the nets' recipes differ."""
    values = {plain_number(recipe[key]) for recipe in recipes.values()}
    if len(values) == 1:
        return f'(default: {values.pop()})'
    return ('(default: ' + ', '.join(f'{plain_number(recipe[key])} for {net}' for net, recipe in recipes.items())
            + ')')


def make_parser(doc, nets, recipes, datasets=('mnist', 'fashion-mnist'), batch_size=10, extend=True, book=None):
    """The flags every training script shares. `recipes[net]` holds that net's default epochs, lr, wd;
    `book[net]`, for the nets in Nielsen's book, the book's epochs, lr and lmbda (--book, book.py)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    first = next(iter(nets))
    book = {net: recipe for net, recipe in (book or {}).items() if net in nets}
    parser.add_argument('--net', choices=list(nets), help=f'which network (default: {first})')
    parser.add_argument('--epochs', type=positive_int, help='training epochs ' + recipe_default('epochs', recipes))
    parser.add_argument('--lr', type=positive_float, help='SGD learning rate ' + recipe_default('lr', recipes))
    parser.add_argument('--wd', type=non_negative_float, help='SGD weight decay ' + recipe_default('wd', recipes))
    parser.add_argument('--batch-size', type=positive_int,
                        help=f'training batch size (default: {batch_size})')
    if len(datasets) > 1:
        parser.add_argument('--dataset', choices=datasets, help=f'which data (default: {datasets[0]})')
    if extend:
        parser.add_argument('--extend_data', '--extend-data', action='store_true', default=None,
                            help='add the training images shifted one pixel right, left, up and down '
                                 '(5x the data) (default: off)')
    if book:
        parser.add_argument('--book', action='store_true', default=None,
                            help='train and report as the book\'s own code did (book.py): 50,000 images train '
                                 'and 10,000 validate, raw pixels, the book\'s initial weights, cost and '
                                 'dropout, and the test accuracy at the best validation epoch; the defaults are '
                                 'the book\'s recipes: ' + '; '.join(
                                     f'{net} {recipe["epochs"]} epochs, lr {plain_number(recipe["lr"])}'
                                     + (f', lmbda {plain_number(recipe["lmbda"])}' if recipe['lmbda'] else '')
                                     for net, recipe in book.items()) + ' (default: off)')
        parser.add_argument('--lmbda', type=non_negative_float,
                            help='with --book: the L2 regularization of the book\'s cost, lambda '
                                 + recipe_default('lmbda', book))
    parser.add_argument('--data-dir',
                        help='where the data is, or is downloaded to (default: ./data; with --resume, the '
                             'folder the run used)')
    parser.add_argument('--device', choices=('auto', 'cpu', 'cuda', 'mps'), default='auto',
                        help='where to train; auto picks an accelerator when there is one (default: auto)')
    parser.add_argument('--threads', type=positive_int, metavar='N',
                        help='on the CPU, the threads that share each operation of a training step, per net '
                             '(--seeds: per group of nets; the groups train side by side, one per core). '
                             'Each operation at batch 10 is so small that splitting it costs more than it '
                             'saves on a busy machine, so the default is 1 at batches of up to '
                             f'{speed.SMALL_BATCH} images per net, else every core; OMP_NUM_THREADS or '
                             'torch.set_num_threads, set before the script runs, choose too. The test pass uses '
                             'every core (default: 1)')
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument('--seed', type=seed_number, help='random seed (default: 1)')
    seeds.add_argument('--seeds', type=seed_number, nargs='+', metavar='S',
                       help='train one net per seed, all at the same time as one stacked computation (net i '
                            'is the net --seed Si trains); prints each net\'s accuracy and their majority vote '
                            '(default: one net)')
    parser.add_argument('--limit', type=positive_int,
                        help='use only the first N training and N test images, for a quick try (default: all)')
    parser.add_argument('--no-progress', action='store_true', help='never show progress bars (default: off)')
    parser.add_argument('--save-model', metavar='PATH', type=output_path,
                        help='save the model there after training, or when training is stopped (Ctrl-C, kill, '
                             'a closed terminal), with what --resume needs to go on; stopped before its first '
                             'epoch ends, it keeps an existing PATH and saves beside it as NAME.interrupted.EXT '
                             '(default: not saved)')
    parser.add_argument('--plot', metavar='PATH.png', type=picture_path,
                        help='save a picture: curves per epoch, misclassified test images and, for a convnet, '
                             'the first layer\'s learned filters; the extension picks the format (.png, .pdf, '
                             '.svg, .jpg, ...) (default: none)')
    parser.add_argument('--predict', nargs='+', metavar='IMAGE',
                        help='classify your own images (photos or drawings) with the trained or --load-model net: '
                             'the top three classes of each; with --plot, a picture of them (default: none)')
    parser.add_argument('--resume', metavar='PATH',
                        help='go on with a run that --save-model saved (at its end, or when it was stopped): from '
                             'the start of the epoch it stopped in, printing the lines and reaching the result it '
                             'would have had it never stopped (to the last digit on the CPU). Its flags come from '
                             'the file (--epochs may raise the total), and it saves back to PATH unless '
                             '--save-model says otherwise (default: a new run)')
    parser.add_argument('--load-model', metavar='PATH',
                        help='test a saved model on the test set and train nothing; the training flags '
                             '(--epochs, --lr, --wd, --batch-size, --extend_data, --seed, --seeds, --threads, '
                             '--save-model) '
                             'are then a usage error (default: train)')
    script = os.path.basename(sys.modules[nets[first].__module__].__file__)  # who saved a model file
    parser.set_defaults(recipes=recipes, book_recipes=book or {}, script=script, first_net=first,
                        first_dataset=datasets[0], default_batch_size=batch_size)
    return parser


def parse_args(parser, argv, adopt_run, adopt_model):
    """Parse, then fill what the user left out from the chosen net's recipe, and pick the device.
    adopt_run(parser, args): --resume's file gives its run's flags, and returns how many groups its nets trained
    in; adopt_model(parser, args): --load-model's file gives its nets' seeds and --book (loading.py has both)."""
    args = parser.parse_args(argv)
    if args.load_model:
        given = [flag for flag in TRAINING_FLAGS if getattr(args, flag, None) is not None
                 and getattr(args, flag, None) is not False]  # given, even as 0 (0 == False in Python)
        if given:
            parser.error(f'argument --load-model: it tests a saved model and trains nothing, so '
                         f'{", ".join("--" + flag.replace("_", "-") for flag in given)} would be ignored; drop '
                         f'{"it" if len(given) == 1 else "them"}')
    torch_seeds = [seed % 2 ** 64 for seed in args.seeds or []]  # torch takes -1 as 2**64 - 1: the same generator
    if len(set(torch_seeds)) < len(torch_seeds):
        first, second = [seed for seed, same in zip(args.seeds, torch_seeds) if torch_seeds.count(same) > 1][:2]
        if first == second:
            parser.error(f'argument --seeds: {first} is given twice; two nets with one seed are the same net')
        parser.error(f'argument --seeds: {first} and {second} are one seed to torch (it counts modulo 2**64); two '
                     f'nets with one seed are the same net')
    if args.seeds and len(args.seeds) == 1:  # one net: the plain path, as --seed
        args.seed, args.seeds = args.seeds[0], None
    if getattr(args, 'book', None) and args.wd is not None:
        parser.error('argument --wd: --book trains with the book\'s L2 term instead of weight decay; give '
                     '--lmbda L for it')
    if getattr(args, 'lmbda', None) is not None and not getattr(args, 'book', None) and not args.resume:
        parser.error('argument --lmbda: it is the L2 term of the book\'s cost; add --book (or use --wd)')
    saved_groups = adopt_run(parser, args) if args.resume else None
    args.data_dir = args.data_dir or './data'
    check_outputs(parser, args)
    args.net = args.net or args.first_net
    args.dataset = getattr(args, 'dataset', None) or args.first_dataset
    args.extend_data = bool(getattr(args, 'extend_data', False))
    args.book = bool(getattr(args, 'book', False))
    if args.book and args.net not in args.book_recipes:
        parser.error(f'argument --book: the book has no {args.net!r} net; --book trains '
                     f'{", ".join("--net " + net for net in args.book_recipes)}')
    recipe = {**args.book_recipes[args.net], 'wd': 0.0} if args.book else {**args.recipes[args.net], 'lmbda': None}
    for key, value in {**recipe, 'batch_size': args.default_batch_size, 'seed': 1}.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.load_model:  # checked now, before any work; a file of several nets gives their seeds
        adopt_model(parser, args)
    del args.recipes, args.book_recipes, args.default_batch_size, args.first_net, args.first_dataset
    try:
        args.device = common.choose_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    if args.threads and args.device.type != 'cpu':
        parser.error(f'argument --threads: it sets the CPU\'s threads, and this run trains on {args.device.type}; '
                     f'drop it, or add --device cpu')
    args.threads = speed.choose_threads(args.threads, args.batch_size, args.device, len(args.seeds or [args.seed]),
                                        saved_groups)
    return args


def flag_name(flag):
    """batch_size -> --batch-size; extend_data keeps the name the published commands use."""
    return '--extend_data' if flag == 'extend_data' else '--' + flag.replace('_', '-')


def flag_as_given(flag, value):
    """--net relu, --extend_data, no --limit: a flag as a command line has it."""
    name = flag_name(flag)
    if value is None or value is False:
        return f'no {name}'
    if isinstance(value, list):
        return f'{name} {" ".join(map(str, value))}'
    return name if value is True else f'{name} {plain_number(value) if isinstance(value, float) else value}'
