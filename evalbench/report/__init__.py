"""``evalbench-report``: the recommendation with its evidence, as CSV, Markdown and plotly figures."""
