"""callbridge: a real-time gateway between Telnyx Call Control and browsers."""

__version__ = "0.1.0"
__all__ = ["__version__"]
