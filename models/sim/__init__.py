"""A simulated world to close the loop in: users with tastes, position bias and satiation
(simulator), a closed loop of policy, reward join and learner without Kafka (closed_loop), and
the policy comparison report over seeds (report)."""
