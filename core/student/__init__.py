"""Building a student from a teacher and a plan: surgery, budgets and their repair,
sensitivity plans, the training-free proxy and the latency table."""
