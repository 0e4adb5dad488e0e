"""The benchmark reports: `reports.reference` (the committed summaries and runs) and
`reports.aggregate` (evidence across tasks with rliable).
"""
