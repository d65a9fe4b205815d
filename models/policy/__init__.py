"""The slate policy and its learning: rerankers, rewards, the online learner, off-policy
evaluation.

Modules:
    slate        candidates, slates, features: what every reranker shares
    rerankers    relevance, MMR and DPP rerankers; ``make_reranker``
    stochastic   the Plackett-Luce policy the learner trains
    rewards      the one reward join (responses -> rewards for a slate)
    learner      off-policy REINFORCE with guardrails
    ope          off-policy evaluation (IPS, SNIPS) from logged slates
    commands     `streamrec report`, `ope`, `bench rerank`
"""
