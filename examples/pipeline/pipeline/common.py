"""What the example's jobs share: the feature columns and the label."""
LABEL = "is_fraud"


def feature_columns(columns) -> list[str]:
    return [c for c in columns if c.startswith("f")]
