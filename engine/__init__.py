"""vlmcodec: a learned image codec engine for vision-language-model pipelines."""

__version__ = "0.1.0"
