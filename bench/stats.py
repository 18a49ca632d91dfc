"""Raw samples of one run, and their summaries (median, min, max, ratio)."""

import statistics


class Samples(object):
    """Every measured value of a run, grouped into table rows.

    A row is (figure, measure, variant); rows of one figure and measure
    that name a ``versus`` row get the ratio of their medians to it, so
    every ratio compares numbers taken in the same run.
    """

    def __init__(self):
        self.rows = {}

    def add(self, figure, measure, variant, value, unit, versus=None):
        row = self.rows.setdefault((figure, measure, variant), {
            'figure': figure, 'measure': measure, 'variant': variant,
            'unit': unit, 'versus': versus, 'values': []})
        if value is not None:
            row['values'].append(value)

    def summaries(self):
        """Summarized rows, by figure, in the order they were measured."""
        out = []
        for (figure, measure, _), row in sorted(self.rows.items(),
                                                key=lambda kv: kv[0][0]):
            item = dict(row, **summary(row['values']))
            base = self.rows.get((figure, measure, row['versus']))
            item['ratio'] = ratio(item['median'],
                                  summary(base['values'])['median']
                                  if base else None)
            out.append(item)
        return out

    def to_json(self):
        return list(self.rows.values())


def summary(values):
    if not values:
        return {'n': 0, 'median': None, 'min': None, 'max': None}
    return {'n': len(values), 'median': statistics.median(values),
            'min': min(values), 'max': max(values)}


def ratio(value, base):
    if value is None or not base:
        return None
    return value / base
