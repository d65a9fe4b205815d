"""The slate policy and its learning: rerankers, rewards, the online learner, off-policy
evaluation.

Modules:
    slate        candidates, slates, features: what every reranker shares
    rerankers    relevance, MMR and DPP rerankers; ``make_reranker``
    stochastic   the Plackett-Luce policy the learner trains
    rewards      the one reward join (responses -> rewards for a slate)
    learner      off-policy REINFORCE with guardrails (and the persistence every learner shares)
    critic       state features of a user's visit; the linear critic of the next visits' value
    actor_critic the actor-critic learner; make_learner / load_learner by settings.algorithm
    constraints  Lagrange multipliers keeping diversity and coverage at relevance-only's
    ope          off-policy evaluation (IPS, SNIPS) from logged slates
    dr           IPS / SNIPS / doubly robust estimate of a new version from experience
    commands     `streamrec report`, `ope`, `learner`, `bench rerank`
"""
