"""The benchmark scripts run end to end on tiny data and print a row per net. No timing is asserted."""
import re

from conftest import run_script

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
