"""What the pipeline measured: the stages' records, their summary over seeds with intervals, and the report's words."""
