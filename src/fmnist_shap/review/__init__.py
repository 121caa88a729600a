"""The review chain: what a change did, and how each stage's outputs came to be.

    significance  paired bootstrap intervals, McNemar's test, per-class recall (also used by
                  the summarize stage: no other import here, so a stage pulls in nothing else)
    changes       one side of a comparison (a git revision or the workspace) and what changed
                  between two: predictions, faithfulness scores, explanation drift
    provenance    each stage's label against a base: changed, rerun here (bit-identical or
                  other bits), pulled, not rerun
    verify        `make verify`: the labels, metric differences beside the seed calibration,
                  versions and settings against this machine; `--check` is publish's guard
    calibrate     `make calibrate`: how far another training seed moves every metric
    report        `make report`: the verdict-first pull-request report

Imports run one way: report, verify → provenance → changes → significance; calibrate → verify.
"""
