"""Models: timm backbones that turn an image batch into pooled features, and their checkpoints."""
