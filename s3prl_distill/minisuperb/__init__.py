"""Mini-SUPERB: an offline, seeded, synthetic corpus in the real SUPERB layouts (KS, IC, SID, PR)
and a fast proxy evaluator following SUPERB's protocol (frozen upstream, learnable weighted sum of
hidden states, light task heads). See :mod:`.generate`, :mod:`.evaluate`, :mod:`.pipeline`.
"""
