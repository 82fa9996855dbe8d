"""clrdist: distributed contrastive learning for collider physics."""

__version__ = "0.1.0"
