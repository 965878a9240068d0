"""The benchmark scripts run end to end on tiny data and print a row per net. No timing is asserted."""
import importlib.util
import json
import os
import re

import pytest

from conftest import ROOT, run_script

NUMBER = r'[\d.]+'


def test_bench_epoch_prints_both_pipelines_and_the_flop_table(data_dir):
    result = run_script('benchmarks/bench_epoch.py', '--data-dir', data_dir, '--limit', '60', '--repeats', '1',
                        '--nets', 'dense', 'simple')
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert '60 training, 60 test images' in out
    for net in ('dense', 'simple'):
        # train a, train b, b/a, load b, steps, test a, test b, b/a, acc a, acc b
        row = rf'^{net} +{NUMBER}s +{NUMBER}s +{NUMBER} +{NUMBER}s +{NUMBER} +{NUMBER}s +{NUMBER}s +{NUMBER} ' \
              rf'+{NUMBER} +{NUMBER}$'
        assert re.search(row, out, re.M), out
        for batch in (10, 128):
            assert re.search(rf'^{net} +{batch} +\d+ +{NUMBER} +{NUMBER}%$', out, re.M), out
    assert re.search(rf'matmul peak \(float32, 2048x2048\): {NUMBER} GFLOP/s', out)


def test_bench_epoch_without_baseline(data_dir):
    result = run_script('benchmarks/bench_epoch.py', '--data-dir', data_dir, '--limit', '60', '--repeats', '1',
                        '--nets', 'dense', '--no-baseline')
    assert result.returncode == 0, result.stderr
    assert re.search(rf'^dense +{NUMBER}s +{NUMBER}s +{NUMBER}$', result.stdout, re.M), result.stdout


def test_fidelity_prints_a_row_per_recipe(data_dir):
    result = run_script('benchmarks/fidelity.py', '--data-dir', data_dir, '--seeds', '1', '2',
                        '--only', 'dense', 'relu')
    assert result.returncode == 0, result.stderr
    for name, original in (('dense', '0.825'), ('relu', '0.849')):
        # original, mean, min, max, then one figure per seed
        assert re.search(rf'^{name} +{original} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} {NUMBER}$',
                         result.stdout, re.M), result.stdout


def test_reproduce_runs_two_rows_then_resumes_instead_of_retraining(data_dir, tmp_path):
    results = tmp_path / 'results.jsonl'
    args = ['benchmarks/reproduce.py', '--dataset', 'mnist', '--data-dir', data_dir, '--epochs', '1',
            '--only', 'dense', 'relu', '--seeds', '1', '2', '--device', 'cpu', '--results', results]
    first = run_script(*args, '--plot', tmp_path / 'all.png')
    assert first.returncode == 0, first.stderr
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r['row'], r['seed'], r['epochs'], r['shortened_to']) for r in records] == \
        [('dense', 1, 1, 1), ('dense', 2, 1, 1), ('relu', 1, 1, 1), ('relu', 2, 1, 1)]
    for record in records:
        assert len(record['accuracy']) == len(record['loss']) == 1 and 0 < record['accuracy'][0] <= 1
        assert record['device'] == 'cpu' and record['torch'] and record['seconds'] > 0
    assert records[2]['command'] == 'python pytorch_mnist_convnet.py --net relu --lr 0.03 --wd 0.00005'
    assert records[0]['accuracy'] != records[1]['accuracy'] or records[0]['loss'] != records[1]['loss']  # two seeds
    dense = [r['accuracy'][0] for r in records[:2]]
    row = (rf'^\| `python pytorch_mnist.py` \| 0\.9758 \| 96\.59 % \(ch\. 1\) \| '
           rf'{sum(dense) / 2:.4f} \({min(dense):.4f}–{max(dense):.4f}\) \| 2 \| 1 \| \d+ s \| .+ \|$')
    assert re.search(row, first.stdout, re.M), first.stdout
    assert (tmp_path / 'all.png').read_bytes()[:4] == b'\x89PNG'

    again = run_script(*args)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count('already in') == 4 and 'after 1 epochs' not in again.stderr
    assert results.read_text().count('\n') == 4  # nothing retrained
    assert again.stdout == first.stdout

    report = run_script('benchmarks/reproduce.py', '--dataset', 'mnist', '--report', '--results', results)
    assert report.returncode == 0 and report.stdout == first.stdout


def test_bench_seeds_prints_one_row_per_net(data_dir):
    result = run_script('benchmarks/bench_seeds.py', '--data-dir', data_dir, '--limit', '60', '--repeats', '1',
                        '--nets', 'dense', 'final', '--k', '3', '--device', 'cpu')
    assert result.returncode == 0, result.stderr
    assert '60 training, 60 test images' in result.stdout and 'K = 3' in result.stdout
    for net in ('dense', 'final'):
        # train 1, train K, K/1, gain, test 1, test K, K/1
        assert re.search(rf'^{net} +{NUMBER}s +{NUMBER}s +{NUMBER} +{NUMBER} +{NUMBER}s +{NUMBER}s +{NUMBER}$',
                         result.stdout, re.M), result.stdout


def test_bench_threads_prints_its_three_parts(data_dir):
    """The machine's line, one net quiet and busy, and K nets against one. Fails when a part is left out or a
    row lacks a figure."""
    result = run_script('benchmarks/bench_threads.py', '--data-dir', data_dir, '--limit', '60', '--repeats', '1',
                        '--nets', 'simple', '--k', '2')
    assert result.returncode == 0, result.stderr
    assert re.search(rf'^\(0\) the machine: one thread of matrix products, quiet {NUMBER}s, busy {NUMBER}s, '
                     rf'busy/quiet {NUMBER}$', result.stdout, re.M), result.stdout
    # quiet torch, quiet ours, ratio, busy torch, busy ours, ratio, busy/quiet torch, busy/quiet ours
    assert re.search(rf'^simple +{NUMBER}s +{NUMBER}s +{NUMBER} +{NUMBER}s +{NUMBER}s +{NUMBER} +{NUMBER} +{NUMBER}$',
                     result.stdout, re.M), result.stdout
    # K, one torch, K torch, K/1, one ours, K ours, K/1, ours/torch
    assert re.search(rf'^simple +2 +{NUMBER}s +{NUMBER}s +{NUMBER} +{NUMBER}s +{NUMBER}s +{NUMBER} +{NUMBER}$',
                     result.stdout, re.M), result.stdout


def test_reproduce_the_five_nets_vote_in_one_run(data_dir, tmp_path):
    results = tmp_path / 'results.jsonl'
    args = ['benchmarks/reproduce.py', '--dataset', 'mnist', '--data-dir', data_dir, '--epochs', '1',
            '--only', 'final-vote', '--seeds', '8', '9', '--device', 'cpu', '--results', results]
    first = run_script(*args)
    assert first.returncode == 0, first.stderr
    [record] = [json.loads(line) for line in results.read_text().splitlines()]  # one run, whatever --seeds says
    assert record['seed'] == [1, 2, 3, 4, 5] and '--seeds 1 2 3 4 5' in record['command']
    assert len(record['per_net']) == 5 and len(record['vote']) == 1
    nets = [accuracies[-1] for accuracies in record['per_net']]
    assert record['accuracy'][-1] == pytest.approx(sum(nets) / 5)
    row = (rf'\| 99\.67 % \(5 nets voting\) \| vote {record["vote"][-1]:.4f}; the 5 nets {sum(nets) / 5:.4f} '
           rf'\({min(nets):.4f}–{max(nets):.4f}\) \| 1 \| 1 \|')
    assert re.search(row, first.stdout), first.stdout
    again = run_script(*args)
    assert again.stderr.count('already in') == 1 and results.read_text().count('\n') == 1


def test_reproduce_book_reports_the_test_accuracy_at_the_best_validation_epoch(data_dir, tmp_path):
    """--book: the rows with --book in their commands, each figure the test accuracy where the validation
    accuracy peaked (a later epoch winning a tie), beside Nielsen's. Fails when the table shows the last
    epoch's test accuracy, or the rows are run without --book."""
    results = tmp_path / 'results.jsonl'
    result = run_script('benchmarks/reproduce.py', '--dataset', 'mnist', '--data-dir', data_dir, '--epochs', '3',
                        '--book', '--only', 'book-dense', 'book-relu', '--device', 'cpu', '--results', results)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r['row'], r['command']) for r in records] == [
        ('book-dense', 'python pytorch_mnist.py --book'), ('book-relu', 'python pytorch_mnist_convnet.py --book --net relu')]
    for record, nielsen in zip(records, (r'96\.59 % \(ch\. 1\)', r'99\.23 %')):
        validation = record['validation']
        best = max(i for i, v in enumerate(validation) if v == max(validation))
        assert len(validation) == 3 and (record['best_epoch'], record['result']) == (best + 1, record['accuracy'][best])
        row = rf'^\| `{re.escape(record["command"])}` \| – \| {nielsen} \| {record["result"]:.4f} at epoch {best + 1} \| 1 \| 3 \|'
        assert re.search(row, result.stdout, re.M), result.stdout
    assert max(records[1]['accuracy']) > 0.5  # relu learns the synthetic images in 3 epochs
    refused = run_script('benchmarks/reproduce.py', '--book', '--only', 'relu', '--results', tmp_path / 'r.jsonl')
    assert refused.returncode == 2 and 'argument --only: no row relu for --dataset fashion-mnist with --book' in refused.stderr


def test_reproduce_refuses_a_row_of_another_dataset(tmp_path):
    result = run_script('benchmarks/reproduce.py', '--dataset', 'cifar10', '--only', 'relu', '--results',
                        tmp_path / 'r.jsonl')
    assert result.returncode == 2
    assert 'argument --only: no row relu for --dataset cifar10' in result.stderr


def test_reproduce_names_the_device_it_ran_on():
    spec = importlib.util.spec_from_file_location('reproduce', ROOT / 'benchmarks' / 'reproduce.py')
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    assert reproduce.device_name('mps').startswith('Apple GPU (MPS)')
    assert reproduce.device_name('cpu').endswith(f'CPU, {os.cpu_count()} cores')


def test_bench_startup_prints_a_row_per_command(data_dir):
    result = run_script('benchmarks/bench_startup.py', '--data-dir', data_dir, '--repeats', '1')
    assert result.returncode == 0, result.stderr
    for command in ('pytorch_mnist_convnet.py --help', 'pytorch_mnist_convnet.py --epochs 1 --limit 1000',
                    'pytorch_mnist.py --epochs 1 --limit 1000'):
        assert re.search(rf'^{re.escape(command)} +this +{NUMBER}$', result.stdout, re.M), result.stdout


def test_bench_processes_trains_the_same_nets_both_ways_and_prints_a_row_per_k(data_dir):
    result = run_script('benchmarks/bench_processes.py', '--data-dir', data_dir, '--limit', '60', '--repeats', '1',
                        '--nets', 'simple', '--k', '2', '3')
    assert result.returncode == 0, result.stderr
    assert 'simple: processes train the same 3 nets as threads: yes' in result.stdout, result.stdout
    for k in (2, 3):  # K, one net, threads, K/1, processes, K/1, processes/threads
        row = rf'^simple +{k} +{NUMBER}s +{NUMBER}s +{NUMBER} +{NUMBER}s +{NUMBER} +{NUMBER}$'
        assert re.search(row, result.stdout, re.M), result.stdout
