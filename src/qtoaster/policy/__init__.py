"""The policy pipeline: checks that return verdicts, and the pipeline that turns them into replies.

``verdict`` holds Stage, Verdict and Facts; ``pipeline`` runs a stage's checks in order;
``checks/`` has one module per check, named after its control file.
"""
