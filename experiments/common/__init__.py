"""What the benchmark harnesses share: result tables and summaries, the machine stamp, worker pools."""
