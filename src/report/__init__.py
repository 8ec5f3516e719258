"""The study's report: reports/results.md and its figures, from the runs `dvc repro` leaves.

python -m src.report    # reads params.yaml (profile), conf/study.yaml (study) and runs/study/
"""
