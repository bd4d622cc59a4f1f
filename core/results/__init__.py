"""What a job leaves behind: student checkpoints, the Parquet leaderboard, reports and plots."""
