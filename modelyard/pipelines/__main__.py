"""``python -m modelyard.pipelines run ...``: the pipeline commands without the rest of the CLI."""
from modelyard.pipelines.cli import pipeline

pipeline(prog_name="python -m modelyard.pipelines")
