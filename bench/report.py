"""Writing a run's results: Markdown table, JSON of raw samples, PNG plot."""

import json
import os

FIGURES = {
    1: 'Snapshot wall time',
    2: 'Guest-visible pause',
    3: 'fsfreeze window',
    4: 'Cost versus root size and used data',
    5: 'Incremental bytes',
    6: 'Memory save throughput',
    7: 'Revert and clone to running',
    8: 'Digests: at take (after the guest resumed) and verify before revert',
    9: 'Incremental export bytes (--since the parent)',
    10: 'Export and import of a full snapshot',
}
_DIGITS = {'s': 2, 'ms': 0, 'MiB': 1, 'MB/s': 0, 's/GiB': 2}


def _fmt(value, unit):
    if value is None:
        return '-'
    return '%.*f' % (_DIGITS.get(unit, 2), value)


def _ratio(value):
    if value is None:
        return ''
    return '%.3gx' % value


def machine_lines(machine):
    return ['- machine: %s, %d cores, %s'
            % (machine['cpu'], machine['cores'], machine['virt']),
            '- libvirt %s, QEMU %s' % (machine['libvirt'], machine['qemu']),
            '- load average before / after: %s / %s'
            % (machine['load_before'], machine['load_after']),
            '- repetitions: %d; bench wall time %.0f s; %s'
            % (machine['reps'], machine['wall_s'], machine['date'])]


def markdown_table(summaries):
    lines = ['| fig | measure | variant | median | min | max | n | '
             'ratio to baseline |',
             '|---|---|---|---:|---:|---:|---:|---:|']
    for row in summaries:
        unit = row['unit']
        lines.append('| %d | %s | %s | %s %s | %s | %s | %d | %s |' % (
            row['figure'], row['measure'], row['variant'],
            _fmt(row['median'], unit), unit, _fmt(row['min'], unit),
            _fmt(row['max'], unit), row['n'], _ratio(row['ratio'])))
    return lines


def write(outdir, samples, machine, notes):
    os.makedirs(outdir, exist_ok=True)
    summaries = samples.summaries()
    figures = '; '.join('%d %s' % kv for kv in FIGURES.items())
    text = (['# snapext vs Nova live snapshot', ''] +
            machine_lines(machine) + [''] + markdown_table(summaries) +
            ['', 'Figures: ' + figures, ''] + ['- %s' % n for n in notes])
    with open(os.path.join(outdir, 'results.md'), 'w') as f:
        f.write('\n'.join(text) + '\n')
    with open(os.path.join(outdir, 'samples.json'), 'w') as f:
        json.dump({'machine': machine, 'notes': notes,
                   'rows': samples.to_json()}, f, indent=1)
    try:
        plot(os.path.join(outdir, 'results.png'), summaries, machine)
    except ImportError:
        # tools/setup-host.sh rebuilds .venv without it; tox -e bench has it.
        print('matplotlib is not installed: no plot (pip install '
              'matplotlib, or run tox -e bench)')


def plot(path, summaries, machine):
    """One panel per measure: median bars with min-max whiskers.

    Rows that other rows are compared with (the baselines, the cold boot,
    the disk's write rate) are grey, snapext rows blue.
    """
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot

    panels = {}
    for row in summaries:
        if row['n']:
            panels.setdefault((row['figure'], row['measure']), []).append(row)
    references = {(r['figure'], r['measure'], r['versus'])
                  for r in summaries if r['versus']}
    cols = 3
    nrows = -(-len(panels) // cols)
    fig, axes = pyplot.subplots(nrows, cols, figsize=(6.5 * cols,
                                                      2.6 * nrows + 1),
                                squeeze=False)
    for ax, ((number, measure), rows) in zip(axes.flat, panels.items()):
        medians = [r['median'] for r in rows]
        errors = [[r['median'] - r['min'] for r in rows],
                  [r['max'] - r['median'] for r in rows]]
        colors = ['0.55' if (number, measure, r['variant']) in references
                  or r['variant'].startswith('baseline') else 'tab:blue'
                  for r in rows]
        y = range(len(rows))
        ax.barh(y, medians, xerr=errors, color=colors, capsize=3)
        ax.set_yticks(list(y), [r['variant'] for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_title('%d. %s\n%s' % (number, FIGURES[number], measure),
                     fontsize=9)
        ax.set_xlabel(rows[0]['unit'], fontsize=8)
        low = min(r['min'] for r in rows)
        if low > 0 and max(r['max'] for r in rows) / low > 50:
            ax.set_xscale('log')
    for ax in list(axes.flat)[len(panels):]:
        ax.axis('off')
    fig.suptitle('snapext (blue) vs baseline (grey): median, min-max; %s, '
                 '%s, libvirt %s, QEMU %s'
                 % (machine['cpu'], machine['virt'], machine['libvirt'],
                    machine['qemu']), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=90)
    pyplot.close(fig)
