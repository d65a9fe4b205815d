"""streamrec.models: the two learning subsystems, and the simulator they are tried in.

Subpackages:
    encoder   the sequence encoder: training, evaluation, checkpoints, cold start
    policy    the slate policy: rerankers, reward join, online learner, off-policy evaluation
    sim       the user simulator, the offline closed loop and the policy report
config.py holds the settings of both (encoder, training, policy, learner).
"""
