"""Reports on a finished run: the evaluation report and what the network sees."""
