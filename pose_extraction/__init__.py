"""Stage 1: videos -> one pose record per video (decoding, detection, estimators, tracking).

May import `pipeline` only; never `recognition`.
"""
