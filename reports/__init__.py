"""The benchmark reports: `reports.runs` (reading a run folder), `reports.benchmark` (what a
benchmark is), `reports.scores` (a report's numbers), `reports.markdown` (its text),
`reports.report` (writing it, its summary, the committed copies and README.md's table),
`reports.reference` (the committed summaries and runs) and `reports.aggregate` (evidence across
tasks with rliable). bench/sample_efficiency.py runs a benchmark and calls them.
"""
